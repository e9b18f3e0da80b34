"""``promtool check metrics`` for tests: lint a Prometheus text exposition, return the problems.

promtool reads the exposition on stdin and exits 0 when clean, 3 with one line per lint problem
on stderr, 1 when the text does not parse (prometheus/prometheus cmd/promtool/main.go,
``checkMetrics``; exit codes ``successExitCode``, ``failureExitCode``, ``lintErrExitCode``).
"""

from __future__ import annotations

import shutil
import subprocess

INSTALL_HINT = "run `make tools` (deploy/tools/install-prometheus.sh installs Debian's prometheus)"


class PromtoolError(RuntimeError):
    """promtool is missing or failed in a way that says nothing about the metrics."""


def promtool_path() -> str:
    """Path of ``promtool`` on PATH; :class:`PromtoolError` saying how to install it if absent."""
    path = shutil.which("promtool")
    if path is None:
        raise PromtoolError(f"promtool not found on PATH: {INSTALL_HINT}")
    return path


def check_metrics(text: str, timeout_s: float = 30.0) -> list[str]:
    """Problems ``promtool check metrics`` finds in ``text`` (empty list = clean).

    A parse error is returned as a problem too (``error while linting: ...``): the text is not
    a valid exposition.
    """
    result = subprocess.run(
        [promtool_path(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode == 0:
        return []
    if result.returncode in (1, 3) and problems:
        return problems
    raise PromtoolError(
        f"promtool check metrics exited {result.returncode} without a finding: "
        f"{result.stderr.strip() or '(no output)'}"
    )
