"""The dependency audit (deploy/tools/audit.py) against a local index and, when reachable, PyPI.

The local index is a stdlib HTTP server on 127.0.0.1 serving the JSON API's project documents;
the pycrypto one is the real https://pypi.org/pypi/pycrypto/json response (fetched 2026, trimmed
to ``info.name``/``info.version``, ``releases`` keys and the four ``vulnerabilities`` entries with
their ``details`` shortened).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from deploy.tools import audit

ROOT = Path(__file__).resolve().parents[2]


def _vuln(
    ident: str, aliases: list[str], fixed_in: list[str], withdrawn: str | None = None
) -> dict[str, Any]:
    return {
        "aliases": aliases,
        "details": "(trimmed)",
        "fixed_in": fixed_in,
        "id": ident,
        "link": f"https://osv.dev/vulnerability/{ident}",
        "source": "osv",
        "summary": None,
        "withdrawn": withdrawn,
    }


def _project(name: str, latest: str, vulns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"info": {"name": name, "version": latest}, "releases": {latest: []}, "urls": [],
            "vulnerabilities": vulns}  # fmt: skip


PYCRYPTO = {
    "info": {"name": "pycrypto", "version": "2.6.1"},
    "releases": {"2.4": [], "2.4.1": [], "2.5": [], "2.6": [], "2.6.1": []},
    "urls": [],
    "vulnerabilities": [
        _vuln("PYSEC-2017-94", ["CVE-2013-7459", "GHSA-cq27-v7xp-c356"], []),
        _vuln("PYSEC-2018-97", ["CVE-2018-6594", "GHSA-6528-wvf6-f6qg"], []),
        _vuln("GHSA-6528-wvf6-f6qg", ["CVE-2018-6594", "PYSEC-2018-97"], []),
        _vuln("GHSA-cq27-v7xp-c356", ["CVE-2013-7459", "PYSEC-2017-94"], []),
    ],
}

# Path -> documents to serve in turn (the last one repeats). An int is an HTTP error status.
INDEX: dict[str, list[dict[str, Any] | int]] = {
    "/pycrypto/json": [PYCRYPTO],
    "/demo-pkg/json": [_project("demo_pkg", "1.0", [])],
    "/oldpkg/json": [_project("oldpkg", "2.0", [])],
    "/oldvuln/json": [_project("oldvuln", "2.0", [_vuln("GHSA-aaaa-bbbb-cccc", [], ["2.1"])])],
    "/branchfix/json": [
        _project("branchfix", "2.0.2", [_vuln("PYSEC-2099-1", [], ["1.2.5", "2.0.3"])])
    ],
    "/retracted/json": [
        _project("retracted", "3.0", [_vuln("PYSEC-2099-2", [], [], "2024-01-02T00:00:00Z")])
    ],
    "/flaky/json": [503, _project("flaky", "0.5", [])],
}


class _Index(BaseHTTPRequestHandler):
    hits: ClassVar[Counter[str]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            n = self.hits[self.path]
            self.hits[self.path] += 1
        answers = INDEX.get(self.path, [404])
        answer = answers[min(n, len(answers) - 1)]
        if isinstance(answer, int):
            self.send_error(answer)
            return
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def index_url() -> Iterator[str]:
    _Index.hits = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


PACKAGES = [
    ("pycrypto", "2.6.1"),
    ("Demo_Pkg", "1.0.0"),  # normalized to demo-pkg; 1.0.0 == 1.0 under PEP 440
    ("oldpkg", "1.0"),
    ("oldvuln", "1.0"),
    ("branchfix", "1.2.6"),
    ("retracted", "3.0"),
    ("flaky", "0.5"),
    ("missing", "9.9"),
]


def test_every_class_against_local_index(index_url: str) -> None:
    report = audit.audit(PACKAGES, index_url=index_url, max_workers=4, timeout_s=5, retries=2)
    by = {r.name: r for r in report.results}
    assert [r.name for r in report.results] == [
        "branchfix", "Demo_Pkg", "flaky", "missing", "oldpkg", "oldvuln", "pycrypto", "retracted"
    ]  # fmt: skip

    pycrypto = by["pycrypto"]
    assert (pycrypto.status, pycrypto.latest, pycrypto.inferred) == ("vulnerable", "2.6.1", False)
    # Alias groups collapse: the GHSA entries are the same flaws as the PYSEC ones.
    assert [(a.id, a.aliases, a.fixed_in) for a in pycrypto.advisories] == [
        ("PYSEC-2017-94", ("CVE-2013-7459", "GHSA-cq27-v7xp-c356"), ()),
        ("PYSEC-2018-97", ("CVE-2018-6594", "GHSA-6528-wvf6-f6qg"), ()),
    ]
    assert pycrypto.advisories[0].link == "https://osv.dev/vulnerability/PYSEC-2017-94"

    assert by["Demo_Pkg"] == audit.PackageResult("Demo_Pkg", "1.0.0", "clean", "1.0")
    assert by["retracted"] == audit.PackageResult("retracted", "3.0", "clean", "3.0")
    assert by["flaky"] == audit.PackageResult("flaky", "0.5", "clean", "0.5")
    assert _Index.hits["/flaky/json"] == 2  # one 503, one retry

    assert by["oldpkg"] == audit.PackageResult("oldpkg", "1.0", "unverified", "2.0")
    # A fix (1.2.5) exists at or below 1.2.6: not inferred vulnerable, only unverified.
    assert by["branchfix"] == audit.PackageResult("branchfix", "1.2.6", "unverified", "2.0.2")

    oldvuln = by["oldvuln"]
    assert (oldvuln.status, oldvuln.latest, oldvuln.inferred) == ("vulnerable", "2.0", True)
    assert [(a.id, a.fixed_in) for a in oldvuln.advisories] == [("GHSA-aaaa-bbbb-cccc", ("2.1",))]

    missing = by["missing"]
    assert (missing.status, missing.latest) == ("unreachable", None)
    assert missing.error == f"HTTP 404 from {index_url}missing/json"
    assert _Index.hits["/missing/json"] == 1  # 404 is not retried

    assert report.counts == {"vulnerable": 2, "clean": 3, "unverified": 2, "unreachable": 1}
    assert report.exit_code == 1
    assert audit.render(report) == [
        f"dependency audit of 8 packages against {index_url}: "
        "2 vulnerable, 3 clean, 2 unverified, 1 unreachable",
        "VULNERABLE oldvuln 1.0 (latest 2.0; inferred: latest affected, no fix at or below "
        "installed): GHSA-aaaa-bbbb-cccc, fixed in: 2.1",
        "VULNERABLE pycrypto 2.6.1 (latest 2.6.1): "
        "PYSEC-2017-94 (aka CVE-2013-7459, GHSA-cq27-v7xp-c356), fixed in: no fixed release; "
        "PYSEC-2018-97 (aka CVE-2018-6594, GHSA-6528-wvf6-f6qg), fixed in: no fixed release",
        "UNVERIFIED branchfix 1.2.6 (latest 2.0.2)",
        "UNVERIFIED oldpkg 1.0 (latest 2.0)",
        f"UNREACHABLE missing 9.9: HTTP 404 from {index_url}missing/json",
    ]


def test_main_exit_codes_and_json(
    index_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.json"
    assert audit.main(["--index", index_url, "--json", str(out)], PACKAGES) == 1
    doc = json.loads(out.read_text())
    assert doc["exit_code"] == 1
    assert doc["counts"] == {"vulnerable": 2, "clean": 3, "unverified": 2, "unreachable": 1}
    pycrypto = next(r for r in doc["results"] if r["name"] == "pycrypto")
    assert [a["id"] for a in pycrypto["advisories"]] == ["PYSEC-2017-94", "PYSEC-2018-97"]
    assert (
        capsys.readouterr()
        .out.splitlines()[0]
        .endswith("2 vulnerable, 3 clean, 2 unverified, 1 unreachable")
    )

    # Nothing vulnerable (unverified and unreachable ones do not fail the audit): exit 0.
    safe = [("Demo_Pkg", "1.0"), ("oldpkg", "1.0"), ("missing", "1")]
    assert audit.main(["--index", index_url], safe) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"dependency audit of 3 packages against {index_url}: "
        "0 vulnerable, 1 clean, 1 unverified, 1 unreachable",
        "UNVERIFIED oldpkg 1.0 (latest 2.0)",
        f"UNREACHABLE missing 1: HTTP 404 from {index_url}missing/json",
    ]


def test_whole_environment_with_index_down_exits_3(index_url: str) -> None:
    """The real ``python -m`` entry point on all of .venv, env-var index holding none of them."""
    run = subprocess.run(
        [sys.executable, "-m", "deploy.tools.audit", "--retries", "0"],
        cwd=ROOT,
        env={"FIRESALE_AUDIT_INDEX": index_url + "nothing-here", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    n = len(audit.installed_distributions())
    assert run.returncode == 3, run.stdout + run.stderr
    first = audit.installed_distributions()[0][0]
    assert run.stdout.splitlines() == [
        f"dependency audit could not run: the index {index_url}nothing-here was unreachable "
        f"for all {n} packages (e.g. {first}: HTTP 404 from {index_url}nothing-here/"
        f"{audit.normalize(first)}/json)"
    ]


def test_connection_refused_is_unreachable() -> None:
    from deploy.kafka.broker import free_port

    url = f"http://127.0.0.1:{free_port()}"
    report = audit.audit([("demo", "1.0")], index_url=url, timeout_s=2, retries=1)
    (only,) = report.results
    assert only.status == "unreachable"
    assert only.error is not None
    assert only.error.startswith("URLError: [Errno 111] Connection refused")
    assert report.exit_code == 3


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{audit.DEFAULT_INDEX}/pip/json", timeout=10) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, TimeoutError, OSError):
        return False


def test_real_index_whole_environment() -> None:
    if not _pypi_reachable():
        pytest.skip("pypi.org JSON API unreachable")
    installed = audit.installed_distributions()
    report = audit.audit(index_url=audit.DEFAULT_INDEX)
    print(audit.render(report)[0])
    assert [(r.name, r.installed) for r in report.results] == installed
    assert "firesale" not in {audit.normalize(r.name) for r in report.results}
    assert report.counts["unreachable"] < len(installed)
    for r in report.results:
        assert r.status in audit.STATUSES
        if r.status == "clean":
            assert r.latest is not None
            assert (r.advisories, r.inferred) == ((), False)
        if r.status == "unverified":
            assert r.latest is not None
            assert r.latest != r.installed
