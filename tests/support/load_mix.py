"""A realistic mixed load on a vault, shared by tests/e2e/test_scale_out.py and bench/load.py.

Client threads, each with its own httpx connection pool, pick operations by weight:
mostly reads (lists, downloads, ranges, FHIR search, portal pages), some uploads
(single request, multipart, tus in several PATCHes, FHIR transactions) and logins and
refreshes. Every HTTP request is recorded with the instance that served it (nginx's
``X-Upstream``), when it started and ended, and whether its answer was the one
expected, so a test can judge each failure against what happened to the cluster at
that moment. A document counts as acknowledged only once its 201 (or the final
tus 204 naming it) has been fully received.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.support.cluster import UPSTREAM_HEADER

DOCUMENT_TYPE = "11502-2"
TUS = {"Tus-Resumable": "1.0.0"}
TUS_PATCHES = 3  # each tus upload goes out in this many PATCHes
TUS_ATTEMPTS = 6
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]{64})">')
LOGIN_CSRF_COOKIE = "medvault_login_csrf"

# Weights of the operations: reads dominate, as in a records system in daily use.
DEFAULT_WEIGHTS: Mapping[str, int] = {
    "list": 18,
    "download": 14,
    "range": 8,
    "fhir_search": 10,
    "portal_page": 10,
    "upload_raw": 6,
    "upload_multipart": 3,
    "upload_tus": 3,
    "fhir_transaction": 2,
    "refresh": 4,
    "api_login": 1,
    "portal_login": 1,
}


@dataclass(frozen=True)
class Call:
    op: str
    method: str
    path: str  # a route's shape, never an id or a token
    status: int  # 0: no HTTP answer (a transport error)
    ok: bool  # the answer the operation expects
    upstream: str  # X-Upstream: the instance(s) nginx sent it to; "" if none
    started: float  # time.monotonic()
    ended: float

    @property
    def upstreams(self) -> list[str]:
        return [part.strip() for part in self.upstream.replace(" : ", ",").split(",") if part]


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass
class LoadResult:
    calls: list[Call] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # document id -> sha256
    sent: set[str] = field(default_factory=set)  # sha256 of every body sent
    tus_patch_upstreams: list[list[str]] = field(default_factory=list)
    operations: int = 0

    def errors(self) -> list[Call]:
        return [call for call in self.calls if not call.ok]


class MixedLoad:
    """``clients`` threads running the mix against ``base_url`` until ``stop()`` or a
    bound: ``max_operations`` in all, or ``duration`` seconds."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        patients: list[str],
        accounts: list[Account],
        pdf: Callable[[str], bytes],
        clients: int,
        seed: int = 17,
        weights: Mapping[str, int] = DEFAULT_WEIGHTS,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.patients = patients
        self.accounts = accounts
        self.pdf = pdf
        self.clients = clients
        self.seed = seed
        self.ops = list(weights)
        self.weights = [weights[op] for op in self.ops]
        self.timeout = timeout
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._documents: list[tuple[str, str, int]] = []  # id, sha256, size
        self._sessions = [_ClientSession(accounts[n % len(accounts)]) for n in range(clients)]

    # -- bookkeeping -----------------------------------------------------------------------

    @property
    def operations(self) -> int:
        with self._lock:
            return self.result.operations

    def stop(self) -> None:
        self._stop.set()

    def seed_documents(self, count: int) -> None:
        """Documents to read from the first request on."""
        with self._client(self.token) as http:
            for n in range(count):
                self._upload_raw(http, random.Random(n))

    def prepare_sessions(self, threads: int = 4) -> None:
        """Log every client in (API and portal) before the load, and forget those calls:
        a hundred password checks at once would measure the start, not the mix."""

        def prepare(own: _ClientSession) -> None:
            with self._client() as http:
                rng = random.Random(0)
                self._api_login(http, rng, own)
                self._portal_login(http, rng, own)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(prepare, self._sessions))
        with self._lock:
            self.result.calls.clear()

    def _client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    def _send(
        self,
        http: httpx.Client,
        op: str,
        method: str,
        url: str,
        *,
        expect: tuple[int, ...],
        shape: str,
        **kwargs: object,
    ) -> httpx.Response | None:
        started = time.monotonic()
        response: httpx.Response | None
        try:
            response = http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            response = None
        ended = time.monotonic()
        status = response.status_code if response is not None else 0
        upstream = response.headers.get(UPSTREAM_HEADER, "") if response is not None else ""
        call = Call(op, method, shape, status, status in expect, upstream, started, ended)
        with self._lock:
            self.result.calls.append(call)
        return response if status in expect else None

    def _acknowledge(self, document_id: str, sha: str, size: int) -> None:
        with self._lock:
            self.result.acknowledged[document_id] = sha
            self._documents.append((document_id, sha, size))

    def _pick_document(self, rng: random.Random) -> tuple[str, str, int] | None:
        with self._lock:
            return rng.choice(self._documents) if self._documents else None

    def _body(self, rng: random.Random) -> tuple[bytes, str]:
        body = self.pdf(f"load {rng.getrandbits(64):x} {uuid.uuid4()}")
        sha = hashlib.sha256(body).hexdigest()
        with self._lock:
            self.result.sent.add(sha)
        return body, sha

    # -- running ---------------------------------------------------------------------------

    def run(self, *, max_operations: int | None = None, duration: float | None = None) -> None:
        deadline = time.monotonic() + duration if duration is not None else None

        def more() -> bool:
            if self._stop.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._lock:
                if max_operations is not None and self.result.operations >= max_operations:
                    return False
                self.result.operations += 1
            return True

        threads = [
            threading.Thread(target=self._client_loop, args=(n, more), name=f"load-{n}")
            for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client_loop(self, number: int, more: Callable[[], bool]) -> None:
        rng = random.Random(self.seed * 1000 + number)
        session = self._sessions[number]
        with self._client(self.token) as http, self._client() as own:
            while more():
                op = rng.choices(self.ops, self.weights)[0]
                getattr(self, f"_{op}")(own if op in _OWN_SESSION else http, rng, session)

    # -- operations: reads -----------------------------------------------------------------

    def _list(self, http: httpx.Client, rng: random.Random, _: _ClientSession) -> None:
        params = {"patient_id": rng.choice(self.patients), "limit": "20"}
        self._send(http, "list", "GET", "/api/v1/documents", params=params, expect=(200,),
                   shape="/api/v1/documents")  # fmt: skip

    def _download(self, http: httpx.Client, rng: random.Random, _: _ClientSession) -> None:
        picked = self._pick_document(rng)
        if picked is None:
            return
        document_id, sha, _size = picked
        got = self._send(http, "download", "GET", f"/api/v1/documents/{document_id}/content",
                         expect=(200,), shape="/api/v1/documents/{id}/content")  # fmt: skip
        if got is not None and hashlib.sha256(got.content).hexdigest() != sha:
            self._mark_wrong("download", got)

    def _range(self, http: httpx.Client, rng: random.Random, _: _ClientSession) -> None:
        picked = self._pick_document(rng)
        if picked is None:
            return
        document_id, _sha, size = picked
        start = rng.randrange(0, max(1, size - 100))
        got = self._send(
            http, "range", "GET", f"/api/v1/documents/{document_id}/content",
            headers={"Range": f"bytes={start}-{start + 99}"}, expect=(206,),
            shape="/api/v1/documents/{id}/content (range)",
        )  # fmt: skip
        if got is not None and len(got.content) != min(100, size - start):
            self._mark_wrong("range", got)

    def _fhir_search(self, http: httpx.Client, rng: random.Random, _: _ClientSession) -> None:
        params = {"patient": rng.choice(self.patients), "_count": "20"}
        got = self._send(http, "fhir_search", "GET", "/fhir/DocumentReference", params=params,
                         expect=(200,), shape="/fhir/DocumentReference")  # fmt: skip
        if got is not None and got.json().get("resourceType") != "Bundle":
            self._mark_wrong("fhir_search", got)

    def _portal_page(self, http: httpx.Client, rng: random.Random, own: _ClientSession) -> None:
        if own.portal_cookie is None and not self._portal_login(http, rng, own):
            return
        page = rng.choice(("/documents", "/patients"))
        http.cookies.set("medvault_session", own.portal_cookie or "")
        got = self._send(http, "portal_page", "GET", page, expect=(200,), shape=page,
                         follow_redirects=False)  # fmt: skip
        if got is not None and _CSRF_META.search(got.text) is None:
            self._mark_wrong("portal_page", got)

    # -- operations: writes ----------------------------------------------------------------

    def _upload_raw(self, http: httpx.Client, rng: random.Random, *_: object) -> None:
        body, sha = self._body(rng)
        params = {"patient_id": rng.choice(self.patients), "document_type": DOCUMENT_TYPE,
                  "filename": "letter.pdf"}  # fmt: skip
        got = self._send(http, "upload_raw", "POST", "/api/v1/documents", params=params,
                         content=body, headers={"content-type": "application/pdf"},
                         expect=(201,), shape="/api/v1/documents")  # fmt: skip
        if got is not None:
            self._acknowledge(got.json()["id"], sha, len(body))

    def _upload_multipart(self, http: httpx.Client, rng: random.Random, *_: object) -> None:
        body, sha = self._body(rng)
        data = {"patient_id": rng.choice(self.patients), "document_type": DOCUMENT_TYPE}
        got = self._send(http, "upload_multipart", "POST", "/api/v1/documents", data=data,
                         files={"file": ("letter.pdf", body, "application/pdf")},
                         expect=(201,), shape="/api/v1/documents (multipart)")  # fmt: skip
        if got is not None:
            self._acknowledge(got.json()["id"], sha, len(body))

    def _upload_tus(self, http: httpx.Client, rng: random.Random, *_: object) -> None:
        """Created, then sent in TUS_PATCHES PATCHes: round-robin puts consecutive
        PATCHes on different instances. After a failed PATCH (a killed instance, a lease
        still held: 423) the client asks HEAD where the upload stands and goes on."""
        body, sha = self._body(rng)
        meta = {"patient_id": rng.choice(self.patients), "document_type": DOCUMENT_TYPE,
                "filename": "scan.pdf"}  # fmt: skip
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        created = self._send(
            http, "upload_tus", "POST", "/api/v1/uploads", expect=(201,),
            headers={**TUS, "Upload-Length": str(len(body)), "Upload-Metadata": encoded},
            shape="/api/v1/uploads",
        )  # fmt: skip
        if created is None:
            return
        url = created.headers["Location"]
        offset, upstreams, failures = 0, [], 0
        patch_size = len(body) // TUS_PATCHES + 1
        while offset < len(body) and failures < TUS_ATTEMPTS:
            piece = body[offset : offset + patch_size]
            headers = {**TUS, "Upload-Offset": str(offset),
                       "Content-Type": "application/offset+octet-stream"}  # fmt: skip
            # 423 is the answer tus prescribes while a cut request's lease runs out, so
            # it is expected only after a PATCH of this upload failed.
            expect = (204,) if failures == 0 else (204, 423)
            sent = self._send(http, "upload_tus", "PATCH", url, content=piece, headers=headers,
                              expect=expect, shape="/api/v1/uploads/{id}")  # fmt: skip
            if sent is not None and sent.status_code == 204:
                upstreams.append(sent.headers.get(UPSTREAM_HEADER, ""))
                offset = int(sent.headers["Upload-Offset"])
                if offset == len(body):
                    self._acknowledge(sent.headers["Medvault-Document-Id"], sha, len(body))
                continue
            failures += 1
            time.sleep(0.3 * failures)
            status = self._send(http, "upload_tus", "HEAD", url, headers=TUS, expect=(200,),
                                shape="/api/v1/uploads/{id}")  # fmt: skip
            if status is not None:
                offset = int(status.headers["Upload-Offset"])
        with self._lock:
            self.result.tus_patch_upstreams.append(upstreams)

    def _fhir_transaction(self, http: httpx.Client, rng: random.Random, *_: object) -> None:
        body, _sha = self._body(rng)
        binary_url = f"urn:uuid:{uuid.uuid4()}"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": binary_url, "request": {"method": "POST", "url": "Binary"},
             "resource": {"resourceType": "Binary", "contentType": "application/pdf",
                          "data": base64.b64encode(body).decode()}},
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
             "request": {"method": "POST", "url": "DocumentReference"},
             "resource": _document_reference(rng.choice(self.patients), binary_url)},
        ]}  # fmt: skip
        got = self._send(http, "fhir_transaction", "POST", "/fhir", content=json.dumps(bundle),
                         headers={"content-type": "application/fhir+json"}, expect=(200,),
                         shape="/fhir (transaction)")  # fmt: skip
        if got is not None and got.json().get("type") != "transaction-response":
            self._mark_wrong("fhir_transaction", got)

    # -- operations: logging in ------------------------------------------------------------

    def _api_login(self, http: httpx.Client, _rng: random.Random, own: _ClientSession) -> bool:
        form = {"username": own.account.username, "password": own.account.password,
                "grant_type": "password"}  # fmt: skip
        got = self._send(http, "api_login", "POST", "/api/v1/auth/token", data=form,
                         expect=(200,), shape="/api/v1/auth/token")  # fmt: skip
        if got is None:
            return False
        own.refresh_token = got.json()["refresh_token"]
        return True

    def _refresh(self, http: httpx.Client, rng: random.Random, own: _ClientSession) -> None:
        if own.refresh_token is None and not self._api_login(http, rng, own):
            return
        got = self._send(http, "refresh", "POST", "/api/v1/auth/refresh",
                         json={"refresh_token": own.refresh_token}, expect=(200,),
                         shape="/api/v1/auth/refresh")  # fmt: skip
        # Each refresh token works once: a lost answer means logging in again.
        own.refresh_token = got.json()["refresh_token"] if got is not None else None

    def _portal_login(self, http: httpx.Client, _rng: random.Random, own: _ClientSession) -> bool:
        http.cookies.clear()
        form = self._send(http, "portal_login", "GET", "/login", expect=(200,), shape="/login")
        csrf = http.cookies.get(LOGIN_CSRF_COOKIE)
        if form is None or not csrf:
            return False
        data = {"username": own.account.username, "password": own.account.password,
                "csrf_token": csrf, "time_zone": ""}  # fmt: skip
        done = self._send(http, "portal_login", "POST", "/login", data=data, expect=(303,),
                          shape="/login", follow_redirects=False)  # fmt: skip
        own.portal_cookie = http.cookies.get("medvault_session") if done is not None else None
        return own.portal_cookie is not None

    def _mark_wrong(self, op: str, response: httpx.Response) -> None:
        """An expected status with the wrong content: recorded as a failed call."""
        now = time.monotonic()
        upstream = response.headers.get(UPSTREAM_HEADER, "")
        call = Call(op, "CHECK", op, response.status_code, False, upstream, now, now)
        with self._lock:
            self.result.calls.append(call)


# Operations that run on the client's own login rather than the admin token.
_OWN_SESSION = frozenset({"portal_page", "portal_login", "api_login", "refresh"})


@dataclass
class _ClientSession:
    account: Account
    refresh_token: str | None = None
    portal_cookie: str | None = None


def _document_reference(patient_id: str, binary_url: str) -> dict[str, object]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": DOCUMENT_TYPE}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": binary_url}}],
    }
