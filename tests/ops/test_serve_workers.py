"""``medvault serve --workers N``: several server processes behind one socket (issue 13).

Each test runs the real CLI with two processes on the embedded default (SQLite and a
folder), because that is where processes share the most: one database file, one key
folder, one host. What must hold across them: writes from both stay consistent and
durable, the audit chain stays whole, only one process runs the embedded job worker
(and another takes it over when that one dies), any process's ``/metrics`` covers all
of them, first-start bootstrap happens once, and no child outlives its supervisor.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.factories import patient_payload, text_pdf_bytes
from tests.support.vault_process import VaultProcess

PROCESSES = 2
DOCUMENT_TYPE = "11488-4"
UPLOADS = 24
WORKER_READY = re.compile(r"server process (\d+) ready \(embedded worker: (True|False)\)")


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultProcess]:
    folder = tmp_path_factory.mktemp("serve-workers")
    process = VaultProcess(
        folder / "data",
        log_path=folder / "serve.log",
        env={"MEDVAULT_SERVER_WORKERS": str(PROCESSES), "MEDVAULT_WORKER_POLL_SECONDS": "0.2"},
    )
    with process:
        _wait_for(lambda: len(process.server_pids()) == PROCESSES, "both children")
        yield process


@pytest.fixture(scope="module")
def token(vault: VaultProcess) -> str:
    return vault.create_token("workers")


@pytest.fixture(scope="module")
def http(vault: VaultProcess, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=vault.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def patient_id(http: httpx.Client) -> str:
    created = http.post("/api/v1/patients", json=patient_payload())
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _connection_to(vault: VaultProcess, pid: int, attempts: int = 200) -> HTTPConnection:
    """A keep-alive connection that the kernel handed to server process ``pid``.

    The children accept on one shared socket, so a connection lands on whichever
    accepts first; keep connecting until one lands on ``pid`` (the others are closed).
    """
    for _ in range(attempts):
        connection = HTTPConnection("127.0.0.1", vault.port, timeout=30)
        connection.connect()
        assert connection.sock is not None
        client_end = connection.sock.getsockname()
        owner = _wait_owner(vault, client_end)
        if owner == pid:
            return connection
        connection.close()
    raise AssertionError(f"no connection landed on process {pid} in {attempts} tries")


def _wait_owner(vault: VaultProcess, client_end: tuple[str, int]) -> int | None:
    # The accept may lag the client's connect() by a moment.
    for _ in range(50):
        for pid in vault.server_pids():
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and (conn.raddr.ip, conn.raddr.port) == client_end:
                    return pid
        time.sleep(0.02)
    return None


def _get(connection: HTTPConnection, path: str, token: str) -> tuple[int, bytes]:
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    return response.status, response.read()


def _ready_lines(vault: VaultProcess) -> list[tuple[int, bool]]:
    return [(int(pid), flag == "True") for pid, flag in WORKER_READY.findall(vault.log_tail(10**7))]


def test_both_processes_answer(vault: VaultProcess, token: str) -> None:
    pids = vault.server_pids()
    assert len(pids) == PROCESSES
    assert vault.pid not in pids  # the supervisor only supervises
    for pid in pids:
        connection = _connection_to(vault, pid)
        try:
            status, body = _get(connection, "/api/v1/patients?limit=1", token)
        finally:
            connection.close()
        assert status == 200, body[:300]


def test_concurrent_writes_from_both_processes_are_all_durable(
    vault: VaultProcess, http: httpx.Client, patient_id: str
) -> None:
    # SQLite allows one writer at a time; both processes queue on the file's writer
    # lock, so none of these may fail with "database is locked" or a 503.
    bodies = [text_pdf_bytes(f"letter {n} from process test") for n in range(UPLOADS)]

    def upload(body: bytes) -> tuple[int, str]:
        # A fresh connection each time, so uploads spread over both processes.
        with httpx.Client(base_url=vault.url, headers=http.headers, timeout=60) as one:
            response = one.post(
                "/api/v1/documents",
                data={"patient_id": patient_id, "document_type": DOCUMENT_TYPE},
                files={"file": ("letter.pdf", body, "application/pdf")},
            )
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(upload, bodies))
    assert [status for status, _ in results] == [201] * UPLOADS, results
    ids = [json.loads(text)["id"] for _, text in results]
    assert len(set(ids)) == UPLOADS

    for document_id, body in zip(ids, bodies, strict=True):
        content = http.get(f"/api/v1/documents/{document_id}/content")
        assert content.status_code == 200
        assert hashlib.sha256(content.content).digest() == hashlib.sha256(body).digest()
    # Both processes appended audit events to one chain; it must verify whole.
    # (`audit verify` exits 1, which cli() raises on, when anything is wrong.)
    report = json.loads(vault.cli("audit", "verify", "--json"))
    assert report["findings"] == [], report


def _live_workers(vault: VaultProcess) -> list[int]:
    """The live server processes that announced they run the embedded job worker."""
    pids = vault.server_pids()
    return [pid for pid, runs in _ready_lines(vault) if runs and pid in pids]


def _upload(http: httpx.Client, patient_id: str, filename: str, words: str) -> str:
    uploaded = http.post(
        "/api/v1/documents",
        data={"patient_id": patient_id, "document_type": DOCUMENT_TYPE},
        files={"file": (filename, text_pdf_bytes(words), "application/pdf")},
    )
    assert uploaded.status_code == 201
    return str(uploaded.json()["id"])


def _wait_for_preview(http: httpx.Client, document_id: str, what: str) -> None:
    """A preview exists only once the embedded worker ran the document's preview job."""
    preview = f"/api/v1/documents/{document_id}/preview"
    _wait_for(lambda: http.get(preview).status_code == 200, what)


def test_exactly_one_process_runs_the_embedded_worker_and_jobs_run(
    vault: VaultProcess, http: httpx.Client, patient_id: str
) -> None:
    assert len(_ready_lines(vault)) >= PROCESSES
    assert len(_live_workers(vault)) == 1, _ready_lines(vault)
    document_id = _upload(http, patient_id, "scan.pdf", "preview me")
    _wait_for_preview(http, document_id, "the preview job")


def test_metrics_cover_every_process(
    vault: VaultProcess, http: httpx.Client, token: str, patient_id: str
) -> None:
    # Jobs run only in the worker process, so a process that reported only its own
    # counters would show no job runs at all.
    _upload(http, patient_id, "jobs.pdf", "count my jobs")
    [worker] = _live_workers(vault)
    other = next(pid for pid in vault.server_pids() if pid != worker)
    _wait_for(lambda: _job_runs(vault, worker, token) > 0, "a job run counted")
    from_worker = _job_runs(vault, worker, token)
    from_other = _job_runs(vault, other, token)
    assert from_other > 0
    # Jobs may still finish between the two scrapes, never un-finish.
    assert from_other >= from_worker


def _job_runs(vault: VaultProcess, pid: int, token: str) -> float:
    connection = _connection_to(vault, pid)
    try:
        status, body = _get(connection, "/metrics", token)
    finally:
        connection.close()
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("medvault_job_runs_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_dead_worker_process_is_replaced_and_its_claim_taken_over(
    vault: VaultProcess, http: httpx.Client, patient_id: str
) -> None:
    [worker] = _live_workers(vault)
    psutil.Process(worker).kill()
    # uvicorn's supervisor notices within its health-check period and starts another;
    # the kernel released the dead child's flock, so one of the live ones claims it.
    _wait_for(
        lambda: len(vault.server_pids()) == PROCESSES and worker not in vault.server_pids(),
        "a replacement process",
    )
    _wait_for(lambda: len(_live_workers(vault)) == 1, "a new embedded worker")
    document_id = _upload(http, patient_id, "after.pdf", "after the crash")
    _wait_for_preview(http, document_id, "a preview after the takeover")


def test_first_start_bootstraps_once_and_children_die_with_the_supervisor(
    tmp_path: Path,
) -> None:
    process = VaultProcess(
        tmp_path / "data", log_path=tmp_path / "serve.log", env={"MEDVAULT_SERVER_WORKERS": "3"}
    )
    process.start()
    try:
        _wait_for(lambda: len(process.server_pids()) == 3, "three children")
        log = process.log_tail(10**7)
        # The first users are made (and their passwords printed) by the supervisor,
        # before any child starts: once, not once per process.
        assert log.count("Created admin and clinician") == 1, log
        users = [json.loads(line) for line in process.cli("user", "list", "--json").splitlines()]
        assert sorted(user["role"] for user in users) == ["admin", "clinician"], users
        children = [psutil.Process(pid) for pid in process.server_pids()]
        supervisor = process.pid
        assert supervisor is not None
        # SIGKILL only the supervisor: nothing of it runs any shutdown code.
        psutil.Process(supervisor).kill()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [child.pid for child in alive]
        with pytest.raises(httpx.TransportError):
            httpx.get(process.url + "/healthz", timeout=2)
    finally:
        process.kill()
