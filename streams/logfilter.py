"""Collapse the Kafka client's repeated complaints during an outage into one line per window.

With the broker away, aiokafka logs "Unable connect to node …", "Unable to update metadata …"
and friends every few milliseconds per connection: a 30 s outage wrote ~3,700 lines per worker
(tests/faults/test_pipeline_faults.py), burying the one line an operator needs. This filter
lets the first record of each kind (logger, level, message template) through, drops repeats
for ``window_s``, and appends to the next one let through how many were dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    """At most one record per (logger, level, template) per ``window_s``; counts the rest."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let ``record`` through unless it repeats one let through within the window.

        >>> f = RepeatFilter(10.0, clock=iter([0.0, 1.0, 2.0, 11.0]).__next__)
        >>> rec = lambda: logging.LogRecord("aiokafka", 40, "", 0, "down: %s", ("n1",), None)
        >>> [f.filter(rec()) for _ in range(3)]
        [True, False, False]
        >>> r = rec(); f.filter(r), r.getMessage()
        (True, 'down: n1 (2 similar in the last 11 s)')
        """
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.msg} ({last[1]} similar in the last {now - last[0]:.0f} s)"
        self._last[key] = (now, 0)
        return True


def quiet_repeats(prefix: str = "aiokafka", window_s: float = 10.0) -> RepeatFilter:
    """Attach one :class:`RepeatFilter` to every logger under ``prefix`` (imported so far).

    Logger filters see only records created on that very logger, so each of aiokafka's
    module loggers gets it; call after the Kafka client modules are imported.
    """
    import aiokafka.consumer.fetcher
    import aiokafka.producer.sender  # noqa: F401

    repeat = RepeatFilter(window_s)
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix + "."))]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat)
    return repeat
