"""Dependency vulnerability audit of the running interpreter's environment.

Run it as ``python -m deploy.tools.audit [--json FILE] [--index URL]``. It audits every
distribution installed beside the interpreter (``importlib.metadata``), except the project
itself (``firesale``), against the package index's JSON API, and prints one report.

Why not pip-audit: it asks ``{index}/{name}/{version}/json`` or api.osv.dev per pinned version,
and on this project's machines the per-version endpoint answers 404 and api.osv.dev does not
resolve, so pip-audit reports every package as "not found" and still says "No known
vulnerabilities found". What answers is the project endpoint ``{index}/{name}/json``: its
``info.version`` is the latest release and its ``vulnerabilities`` list holds the OSV advisories
(id, aliases, fixed_in, link, withdrawn) that affect *that latest release* only
(https://docs.pypi.org/api/json/, "Get a project").

Each package gets one class:

``vulnerable``
    installed == latest and the latest has at least one advisory whose ``withdrawn`` is null;
    or, *inferred*, installed < latest, an advisory on the latest is not withdrawn, and none of
    its ``fixed_in`` versions is <= installed. The latest being affected while no fix has been
    released at or below the installed version means the installed one is affected unless the
    flaw was introduced between the two releases, which the project endpoint cannot tell; the
    report marks these "inferred" so a reader knows to check.
``clean``
    installed == latest and the latest has no advisory that is not withdrawn.
``unverified``
    installed != latest and no inference above applies: advisories that affected only older
    releases are not listed on the project endpoint, so nothing can be said; the latest is shown.
``unreachable``
    the index could not be queried for the package (network error, HTTP error such as 404 for a
    package the index does not hold, or a body that is not the expected JSON); the error is shown.

Exit code: 1 if anything is vulnerable; 3 if the index was unreachable for every package (the
audit could not run; whether that fails CI is the caller's choice); 0 otherwise.

The index base URL is ``--index``, else the environment variable ``FIRESALE_AUDIT_INDEX``, else
``https://pypi.org/pypi``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

Status = Literal["vulnerable", "clean", "unverified", "unreachable"]
STATUSES: tuple[Status, ...] = ("vulnerable", "clean", "unverified", "unreachable")

DEFAULT_INDEX = "https://pypi.org/pypi"
INDEX_ENV = "FIRESALE_AUDIT_INDEX"
PROJECT_NAME = "firesale"
USER_AGENT = "firesale-audit/1 (+deploy/tools/audit.py)"


class AuditError(Exception):
    """Root of this tool's errors."""


class IndexUnreachableError(AuditError):
    """The index did not give usable JSON for one package after all retries."""


@dataclass(frozen=True)
class Advisory:
    """One advisory listed on the latest release (OSV fields as the JSON API gives them)."""

    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]
    link: str | None


@dataclass(frozen=True)
class PackageResult:
    """The audit verdict for one installed distribution."""

    name: str
    installed: str
    status: Status
    latest: str | None = None
    advisories: tuple[Advisory, ...] = ()
    inferred: bool = False  # vulnerable by the installed < latest rule, not by an exact match
    error: str | None = None


@dataclass(frozen=True)
class AuditReport:
    """All verdicts of one run, sorted by normalized package name."""

    index_url: str
    results: tuple[PackageResult, ...]
    counts: dict[Status, int] = field(init=False)

    def __post_init__(self) -> None:
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        object.__setattr__(self, "counts", counts)

    @property
    def could_not_run(self) -> bool:
        """True when there were packages and the index answered for none of them."""
        return bool(self.results) and self.counts["unreachable"] == len(self.results)

    @property
    def exit_code(self) -> int:
        if self.counts["vulnerable"]:
            return 1
        if self.could_not_run:
            return 3
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "index_url": self.index_url,
            "counts": self.counts,
            "exit_code": self.exit_code,
            "results": [asdict(r) for r in self.results],
        }


def normalize(name: str) -> str:
    """PEP 503 normalized project name, as the index's URLs use it.

    >>> normalize("Zope.Interface_x")
    'zope-interface-x'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(skip: Iterable[str] = (PROJECT_NAME,)) -> list[tuple[str, str]]:
    """``(name, version)`` of every distribution visible to this interpreter, minus ``skip``.

    A name installed twice on ``sys.path`` is kept once, the first found (the one imports see).
    """
    skipped = {normalize(s) for s in skip}
    seen: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:  # broken metadata directory: nothing to audit by
            continue
        key = normalize(name)
        if key not in skipped and key not in seen:
            seen[key] = (name, dist.version)
    return [seen[k] for k in sorted(seen)]


def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _active_advisories(project: dict[str, Any]) -> list[Advisory]:
    """Advisories not withdrawn, one per alias group (PYSEC and GHSA ids often name one flaw)."""
    kept: list[Advisory] = []
    known: set[str] = set()
    for entry in project.get("vulnerabilities") or []:
        if entry.get("withdrawn"):
            continue
        ident = str(entry["id"])
        aliases = tuple(str(a) for a in entry.get("aliases") or [])
        if ident in known:
            continue
        known.add(ident)
        known.update(aliases)
        fixed = tuple(str(v) for v in entry.get("fixed_in") or [])
        kept.append(Advisory(ident, aliases, fixed, entry.get("link")))
    return kept


def _affects_older(advisory: Advisory, installed: Version) -> bool:
    """Inference for installed < latest: no listed fix is at or below the installed version."""
    fixes = [v for v in (_parse_version(f) for f in advisory.fixed_in) if v is not None]
    return not any(fix <= installed for fix in fixes)


def classify(name: str, installed: str, project: dict[str, Any]) -> PackageResult:
    """Verdict for one package from the index's project JSON (pure: no I/O)."""
    try:
        latest = str(project["info"]["version"])
    except (KeyError, TypeError):
        return PackageResult(name, installed, "unreachable", error="no info.version in response")
    advisories = _active_advisories(project)
    have, newest = _parse_version(installed), _parse_version(latest)
    same = have == newest if have is not None and newest is not None else installed == latest
    if same:
        status: Status = "vulnerable" if advisories else "clean"
        return PackageResult(name, installed, status, latest, tuple(advisories))
    if have is not None and newest is not None and have < newest:
        hits = tuple(a for a in advisories if _affects_older(a, have))
        if hits:
            return PackageResult(name, installed, "vulnerable", latest, hits, inferred=True)
    return PackageResult(name, installed, "unverified", latest)


def fetch_project(
    index_url: str, name: str, *, timeout_s: float = 10.0, retries: int = 2
) -> dict[str, Any]:
    """GET ``{index_url}/{name}/json``; retries network errors, 429 and 5xx with backoff.

    Raises ``IndexUnreachableError`` with the last error once retries are spent, or at once on
    other HTTP errors (404: the index does not hold the project; asking again will not help).
    """
    url = f"{index_url.rstrip('/')}/{urllib.parse.quote(normalize(name))}/json"
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}
    )
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            # Exponential backoff, capped, full jitter (STYLE.md "Connections are supervised").
            time.sleep(random.uniform(0, min(4.0, 0.25 * 2**attempt)))
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} from {url}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            last = f"{type(exc).__name__}: {reason} ({url})"
        except ValueError as exc:  # not JSON
            last = f"invalid JSON from {url}: {exc}"
        else:
            if isinstance(body, dict):
                return body
            last = f"unexpected JSON ({type(body).__name__}) from {url}"
    raise IndexUnreachableError(last)


def _audit_one(
    index_url: str, name: str, version: str, timeout_s: float, retries: int
) -> PackageResult:
    try:
        project = fetch_project(index_url, name, timeout_s=timeout_s, retries=retries)
    except IndexUnreachableError as exc:
        return PackageResult(name, version, "unreachable", error=str(exc))
    return classify(name, version, project)


def audit(
    packages: Iterable[tuple[str, str]] | None = None,
    *,
    index_url: str = DEFAULT_INDEX,
    max_workers: int = 8,
    timeout_s: float = 10.0,
    retries: int = 2,
) -> AuditReport:
    """Audit ``packages`` (``(name, version)`` pairs; default: this environment) in parallel."""
    todo = list(installed_distributions() if packages is None else packages)
    results: list[PackageResult] = []
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(todo)))) as pool:
            results = list(
                pool.map(lambda p: _audit_one(index_url, p[0], p[1], timeout_s, retries), todo)
            )
    results.sort(key=lambda r: normalize(r.name))
    return AuditReport(index_url, tuple(results))


def _advisory_text(advisory: Advisory) -> str:
    aka = f" (aka {', '.join(advisory.aliases)})" if advisory.aliases else ""
    fixed = ", ".join(advisory.fixed_in) if advisory.fixed_in else "no fixed release"
    return f"{advisory.id}{aka}, fixed in: {fixed}"


def render(report: AuditReport) -> list[str]:
    """The report as printed lines: one summary, then one line per non-clean package."""
    n = len(report.results)
    if report.could_not_run:
        first = report.results[0].error
        return [
            f"dependency audit could not run: the index {report.index_url} was unreachable "
            f"for all {n} packages (e.g. {report.results[0].name}: {first})"
        ]
    c = report.counts
    lines = [
        f"dependency audit of {n} packages against {report.index_url}: "
        f"{c['vulnerable']} vulnerable, {c['clean']} clean, "
        f"{c['unverified']} unverified, {c['unreachable']} unreachable"
    ]
    for r in report.results:
        if r.status == "vulnerable":
            how = "; inferred: latest affected, no fix at or below installed" if r.inferred else ""
            head = f"VULNERABLE {r.name} {r.installed} (latest {r.latest}{how})"
            lines.append(f"{head}: " + "; ".join(_advisory_text(a) for a in r.advisories))
    for r in report.results:
        if r.status == "unverified":
            lines.append(f"UNVERIFIED {r.name} {r.installed} (latest {r.latest})")
    for r in report.results:
        if r.status == "unreachable":
            lines.append(f"UNREACHABLE {r.name} {r.installed}: {r.error}")
    return lines


def main(
    argv: Sequence[str] | None = None, packages: Iterable[tuple[str, str]] | None = None
) -> int:
    """CLI entry point; returns the exit code. ``packages`` replaces the environment (tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.tools.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--index",
        default=os.environ.get(INDEX_ENV) or DEFAULT_INDEX,
        help=f"index JSON API base URL (default: ${INDEX_ENV} or {DEFAULT_INDEX})",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    parser.add_argument("--workers", type=int, default=8, help="parallel requests (default 8)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=2, help="retries per package")
    args = parser.parse_args(argv)
    report = audit(
        packages,
        index_url=args.index,
        max_workers=args.workers,
        timeout_s=args.timeout,
        retries=args.retries,
    )
    print("\n".join(render(report)), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
