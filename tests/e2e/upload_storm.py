"""A seeded storm of uploads against a real server process, with a killer thread.

Client threads push synthetic PDFs (raw body or multipart, in one piece or paced
out in chunks like a slow network) while the killer SIGKILLs the server at seeded
moments spread across the run and restarts it. An upload counts as acknowledged
only when a 201 with the document id was fully received. An upload cut off by a
kill is retried with the same bytes: a 409 naming the existing document then proves
the first attempt had committed even though its response was lost.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from tests.support.vault_process import START_TIMEOUT_SECONDS, VaultProcess

MiB = 1024 * 1024
MODES = ("raw", "raw-paced", "multipart", "multipart-paced")
# Paced bodies go out in chunks with a pause, so a kill can land mid-stream instead
# of only between requests (a local 3 MiB body otherwise arrives in a few ms).
PACE_CHUNK = 64 * 1024
PACE_SECONDS = 0.003
MAX_ATTEMPTS = 3
# XL bodies are larger than the smallest S3 part (5 MiB), so they go out as multipart.
XL_MIN, XL_MAX = 5 * MiB + MiB // 2, 6 * MiB + MiB // 2
XL_EVERY = 16
DEEP_KILL_AFTER = 5 * MiB + MiB // 4  # past the first S3 part, before the end of the body
# Kills closer together than this would hit the same few uploads over and over.
MIN_UPLOADS_BETWEEN_KILLS = 12
DOCUMENT_TYPE = "11502-2"


@dataclass(frozen=True)
class PlannedUpload:
    index: int
    size: int
    mode: str


@dataclass(frozen=True)
class Acknowledged:
    document_id: str
    sha256: str
    size: int
    index: int
    via: str  # "201", or "409" when a retry found the lost first attempt committed


@dataclass(frozen=True)
class KillRecord:
    number: int
    aim: str
    progress: int
    in_flight: int
    in_flight_bytes: int
    largest_in_flight: int
    restart_seconds: float


@dataclass
class _InFlight:
    size: int
    paced: bool
    sent: int = 0  # paced bodies only: bytes handed to the socket so far


@dataclass
class StormResult:
    acknowledged: list[Acknowledged] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    interrupted_requests: int = 0
    gave_up: list[int] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # sha256 -> planned index
    killer_error: str | None = None
    seconds: float = 0.0


def plan_uploads(rng: random.Random, count: int) -> list[PlannedUpload]:
    """Mostly tiny and medium files, a third of 1-3 MiB, a few past one S3 part (5 MiB).

    Every ``XL_EVERY``-th upload is a paced XL body, so the deep kill always finds one.
    """
    plan = []
    for index in range(count):
        roll = rng.random()
        if index % XL_EVERY == XL_EVERY // 2:
            size = rng.randint(XL_MIN, XL_MAX)
            plan.append(PlannedUpload(index, size, rng.choice(("raw-paced", "multipart-paced"))))
            continue
        if roll < 0.40:
            size = rng.randint(300, 16 * 1024)
        elif roll < 0.60:
            size = rng.randint(64 * 1024, 512 * 1024)
        elif roll < 0.94:
            size = rng.randint(1 * MiB, 3 * MiB)
        else:
            size = rng.randint(XL_MIN, XL_MAX)
        plan.append(PlannedUpload(index, size, rng.choice(MODES)))
    return plan


def kill_points(rng: random.Random, count: int, kills: int) -> list[int]:
    """One kill per equal slice of the run, at a seeded point inside the slice."""
    first, last = count // 12, count - count // 10
    width = (last - first) / kills
    return [first + int(width * k + rng.random() * width) for k in range(kills)]


def _paced(body: bytes, tracker: _InFlight) -> Iterator[bytes]:
    for start in range(0, len(body), PACE_CHUNK):
        yield body[start : start + PACE_CHUNK]
        tracker.sent = min(len(body), start + PACE_CHUNK)
        time.sleep(PACE_SECONDS)


class UploadStorm:
    def __init__(
        self,
        vault: VaultProcess,
        *,
        token: str,
        patient_id: str,
        seed: int,
        uploads: int,
        clients: int,
        kills: int,
    ) -> None:
        self.vault = vault
        self.token = token
        self.patient_id = patient_id
        self.rng = random.Random(seed)
        self.plan = plan_uploads(self.rng, uploads)
        self.kill_at = kill_points(self.rng, uploads, kills)
        self.clients = clients
        self.run_tag = uuid.uuid4().hex[:12]
        self.result = StormResult()
        self._queue: queue.Queue[PlannedUpload] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight: dict[int, _InFlight] = {}  # by request number
        # One kill waits for a paced body past one S3 part, to catch a multipart upload.
        self.deep_kill = self.rng.randrange(kills)
        self._requests = 0
        self._progress = 0
        self._up = threading.Event()
        self._done = threading.Event()
        self._abort = threading.Event()

    # -- driver ----------------------------------------------------------------------

    def run(self) -> StormResult:
        for item in self.plan:
            self._queue.put(item)
        self._up.set()
        started = time.monotonic()
        workers = [
            threading.Thread(target=self._client, name=f"uploader-{n}", daemon=True)
            for n in range(self.clients)
        ]
        killer = threading.Thread(target=self._killer, name="killer", daemon=True)
        for thread in [*workers, killer]:
            thread.start()
        for thread in workers:
            thread.join()
        self._done.set()
        killer.join()
        self.result.seconds = time.monotonic() - started
        return self.result

    # -- clients ---------------------------------------------------------------------

    def _payload(self, item: PlannedUpload) -> bytes:
        head = b"%PDF-1.7\n" + f"%medvault crash test {self.run_tag} #{item.index}\n".encode()
        return head + os.urandom(max(0, item.size - len(head)))

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = httpx.Timeout(60.0, connect=5.0)
        with httpx.Client(base_url=self.vault.url, headers=headers, timeout=timeout) as http:
            while not self._abort.is_set():
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                with self._lock:
                    self._progress += 1
                self._upload(http, item)

    def _upload(self, http: httpx.Client, item: PlannedUpload) -> None:
        body = self._payload(item)
        sha = hashlib.sha256(body).hexdigest()
        with self._lock:
            self.result.sent[sha] = item.index
        for attempt in range(1, MAX_ATTEMPTS + 1):
            # After a kill, wait for the restart instead of burning attempts.
            if not self._up.wait(timeout=START_TIMEOUT_SECONDS + 30) or self._abort.is_set():
                return
            with self._lock:
                self._requests += 1
                request_number = self._requests
                tracker = self._in_flight[request_number] = _InFlight(
                    len(body), item.mode.endswith("paced")
                )
            try:
                response = self._send(http, item, body, tracker)
            except httpx.TransportError:
                with self._lock:
                    self.result.interrupted_requests += 1
                continue
            finally:
                with self._lock:
                    del self._in_flight[request_number]
            self._judge(item, sha, len(body), response, attempt)
            return
        with self._lock:
            self.result.gave_up.append(item.index)

    def _send(
        self, http: httpx.Client, item: PlannedUpload, body: bytes, tracker: _InFlight
    ) -> httpx.Response:
        filename = f"crash-{item.index}.pdf"
        fields = {"patient_id": self.patient_id, "document_type": DOCUMENT_TYPE}
        if item.mode == "raw":
            return http.post(
                "/api/v1/documents",
                params={**fields, "filename": filename},
                content=body,
                headers={"Content-Type": "application/pdf"},
            )
        if item.mode == "raw-paced":
            return http.post(
                "/api/v1/documents",
                params={**fields, "filename": filename},
                content=_paced(body, tracker),
                headers={"Content-Type": "application/pdf"},
            )
        files = {"file": (filename, body, "application/pdf")}
        if item.mode == "multipart":
            return http.post("/api/v1/documents", data=fields, files=files)
        encoded = httpx.Request("POST", self.vault.url, data=fields, files=files)
        return http.post(
            "/api/v1/documents",
            content=_paced(encoded.read(), tracker),
            headers={"Content-Type": encoded.headers["Content-Type"]},
        )

    def _judge(
        self, item: PlannedUpload, sha: str, size: int, response: httpx.Response, attempt: int
    ) -> None:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        ack: Acknowledged | None = None
        if response.status_code == 201 and payload.get("id"):
            if payload.get("sha256") != sha or payload.get("size") != size:
                problem = f"#{item.index}: 201 with sha256/size {payload.get('sha256')}/"
                problem += f"{payload.get('size')}, sent {sha}/{size}"
                self._note(problem)
            ack = Acknowledged(str(payload["id"]), sha, size, item.index, "201")
        elif (
            response.status_code == 409
            and attempt > 1
            and str(payload.get("type", "")).endswith("duplicate-document")
            and payload.get("existing_document_id")
        ):
            ack = Acknowledged(str(payload["existing_document_id"]), sha, size, item.index, "409")
        else:
            self._note(
                f"#{item.index} ({item.mode}, {item.size} B, attempt {attempt}): "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        if ack is not None:
            with self._lock:
                self.result.acknowledged.append(ack)

    def _note(self, problem: str) -> None:
        with self._lock:
            self.result.unexpected.append(problem)

    # -- killer ----------------------------------------------------------------------

    def _killer(self) -> None:
        try:
            last = -MIN_UPLOADS_BETWEEN_KILLS
            for number, point in enumerate(self.kill_at):
                if not self._wait_for_progress(max(point, last + MIN_UPLOADS_BETWEEN_KILLS)):
                    return
                if number == self.deep_kill:
                    aim = "a paced XL body past its first 5 MiB"
                    hit = self._wait_for_body(
                        lambda b: b.paced and b.size > b.sent >= DEEP_KILL_AFTER, timeout=15
                    )
                else:
                    aim = "any 1 MiB+ body in flight"
                    hit = self._wait_for_body(lambda b: b.size >= MiB, timeout=3)
                    time.sleep(self.rng.uniform(0.0, 0.05))
                last = self._kill_and_restart(aim if hit else f"{aim} (not found: any moment)")
        except Exception as exc:  # reported by the test; clients must not hang on it
            self.result.killer_error = f"{type(exc).__name__}: {exc}"
            self._abort.set()
            self._up.set()

    def _wait_for_progress(self, point: int) -> bool:
        while not self._done.is_set():
            with self._lock:
                if self._progress >= point:
                    return True
            time.sleep(0.005)
        return False

    def _wait_for_body(self, wanted: Callable[[_InFlight], bool], *, timeout: float) -> bool:
        """Prefer a moment when a large body is on the wire, so the kill lands mid-stream.

        Best effort: after ``timeout`` the kill happens anyway, whatever is in flight.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._done.is_set():
            with self._lock:
                if any(wanted(body) for body in self._in_flight.values()):
                    return True
            time.sleep(0.001)
        return False

    def _kill_and_restart(self, aim: str) -> int:
        self._up.clear()
        with self._lock:
            sizes = [body.size for body in self._in_flight.values()]
            progress = self._progress
        self.vault.kill()
        started = time.monotonic()
        self.vault.start()
        record = KillRecord(
            number=len(self.result.kills) + 1,
            aim=aim,
            progress=progress,
            in_flight=len(sizes),
            in_flight_bytes=sum(sizes),
            largest_in_flight=max(sizes, default=0),
            restart_seconds=round(time.monotonic() - started, 2),
        )
        self.result.kills.append(record)
        self._up.set()
        return progress
