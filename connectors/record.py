"""Recording raw frames, and reading recordings back.

``firesale connect --record DIR`` writes every raw frame with its receive time to
``DIR/frames-<UTC start>.jsonl.gz``, one JSON object per line::

    {"c": "<connection name>", "t": <ts_recv_ns>, "r": "<frame text>"}      # text frames
    {"c": "...", "t": ..., "b": "<base64>"}                                  # binary frames

Files rotate when they reach ``max_bytes`` (uncompressed) or ``max_age_s``; each file is a
complete gzip stream once closed, so a crash loses at most the open file's unflushed tail.
"""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson


class RecordingError(ValueError):
    """A recording file is unreadable; the message names the file and line."""


class FrameRecorder:
    """Append raw frames to rotating gzip JSON-lines files."""

    def __init__(
        self, directory: Path, max_bytes: int = 256 * 2**20, max_age_s: float = 3600.0
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.files: list[Path] = []
        self._fh: gzip.GzipFile | None = None
        self._written = 0
        self._opened = 0.0
        directory.mkdir(parents=True, exist_ok=True)

    def _open(self) -> gzip.GzipFile:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.directory / f"frames-{stamp}-{len(self.files):04d}.jsonl.gz"
        self.files.append(path)
        self._written = 0
        self._opened = time.monotonic()
        return gzip.open(path, "wb", compresslevel=5)

    def write(self, connection: str, ts_recv_ns: int, raw: str | bytes) -> None:
        """Append one frame (rotating first when the current file is full or old)."""
        if self._fh is not None and (
            self._written >= self.max_bytes or time.monotonic() - self._opened >= self.max_age_s
        ):
            self._fh.close()
            self._fh = None
        if self._fh is None:
            self._fh = self._open()
        record: dict[str, object] = {"c": connection, "t": ts_recv_ns}
        if isinstance(raw, str):
            record["r"] = raw
        else:
            record["b"] = base64.b64encode(raw).decode()
        line = orjson.dumps(record) + b"\n"
        self._fh.write(line)
        self._written += len(line)

    def close(self) -> None:
        """Close the current file (a complete gzip stream)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_recording(paths: Iterable[Path]) -> Iterator[tuple[str, int, str | bytes]]:
    """Yield ``(connection, ts_recv_ns, raw)`` from recording files, in file order."""
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        rec = orjson.loads(line)
                        raw: str | bytes = rec["r"] if "r" in rec else base64.b64decode(rec["b"])
                        yield str(rec["c"]), int(rec["t"]), raw
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        raise RecordingError(
                            f"{path}:{lineno}: not a recorded frame ({exc})"
                        ) from None
        except (OSError, EOFError) as exc:
            raise RecordingError(f"{path}: cannot read ({exc})") from None
