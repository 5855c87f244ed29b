"""What a resumable (tus) upload costs against the single-request raw upload.

A tus upload (``/api/v1/uploads``) encrypts each PATCH's bytes into a staged chunk
under its own data key; the PATCH that brings the last byte then reads the chunks back
(decrypting, authenticating) and feeds the plaintext through the single-request
upload's own pipeline, which encrypts it again into the version blob. So a tus upload
should cost about one more read + decrypt + encrypt + write of the file than
``POST /api/v1/documents`` with the raw body. This script measures that, in one
run, against that baseline, for each file size (``--sizes-mib``, default 16 128 512):

* ``raw``: ``POST /api/v1/documents?...`` with the whole file as the body (baseline);
* ``tus_whole``: tus creation, then one PATCH with the whole file;
* ``tus_5mib``: PATCHes of 5 MiB (tus-js-client / Uppy with a chunkSize);
* ``tus_1mib``: PATCHes of 1 MiB;
* ``tus_5mib_sha256``: 5 MiB PATCHes, each with ``Upload-Checksum: sha256 ...``
  (computed on the client before the timed part, as a client would while reading).

``--patch-mib`` and ``--checksum-patch-mib`` choose the PATCH sizes (0 = whole file).

Every round (``--reps``, default 3) runs each variant once per size, in an order
rotated from round to round, so drift hits every variant alike; the ratio to ``raw``
is taken per round as well as between the medians. The client is httpx (one
keep-alive ``httpx.Client``), streaming each body from the file in 1 MiB reads with
an explicit Content-Length, as a tus client does: nothing holds the file in memory.

Timed per upload: wall time from the first request to the last answer (creation
included), the final PATCH alone, and that PATCH's *tail*: from the moment its last
body byte went to the socket until its answer. The tail is the completion pass
(read the chunks back, the single-request pipeline, the transaction), plus the
remainder of that request's bytes still in the socket buffers (a few MiB at most);
for ``raw`` it is what follows the body (fsync, PDF check, commit). Also: the
server's CPU seconds (whole upload and final PATCH), the client's own CPU, the
server's minor page faults, and the server's RSS sampled every 50 ms (growth = peak
during the upload - RSS just before).

The vault runs as ``medvault serve`` with one process, the embedded job worker off
(so nothing queued by one upload runs during the next; every variant queues the same
jobs) and the upload rate limit lifted. After every upload, untimed: the document's
SHA-256 is checked against the file's, the version blob is deleted from the store
(page cache on this VM: see README, large_files.py) and the staged chunks the upload
left behind are counted (there should be none). Before each size, one untimed raw and
one untimed tus upload of that size warm the page cache and the code paths.

Payload (``--payload``): ``pdf`` (default) is a well-formed PDF whose bulk is one
random image stream; ``random`` is ``%PDF-1.7`` and random bytes, which qpdf cannot
parse, so the vault's active-content check reads the whole file once more on every
upload (tus or not) and drowns the difference (see large_files.py).

Backends: ``--backend sqlite`` (default, the embedded one) or ``postgres`` (two
throw-away databases on 127.0.0.1:5432, as listing.py); ``--storage file`` (default)
or ``s3`` (moto's S3 server as a subprocess: it holds objects in memory and is slow,
so it measures moto as much as the vault).

    .venv/bin/python bench/tus_uploads.py                         # ~3 min on 2 cores
    .venv/bin/python bench/tus_uploads.py --sizes-mib 8 --reps 1 --name tus_uploads_smoke
    .venv/bin/python bench/tus_uploads.py --backend postgres --storage s3 --sizes-mib 16 128
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import httpx
import psutil

from common import (
    HOST,
    MB,
    VENV_BIN,
    GiB,
    MiB,
    RssSampler,
    ServerProcess,
    VaultServer,
    free_port,
    machine_info,
    median,
    new_figure,
    save_figure,
    wait_for_http,
    write_json,
    write_synthetic_pdf,
)
from large_files import busy_cpu, minor_faults, process_cpu, sha256_file, write_wellformed_pdf
from listing import PG_URL, bench_databases

NAME = "tus_uploads"
DOC_TYPE = "11502-2"
TUS = {"Tus-Resumable": "1.0.0"}
PATCH_TYPE = "application/offset+octet-stream"
READ_BYTES = MiB  # the client reads and sends the file in pieces this large
S3_BUCKET = "medvault-bench"
S3_PREFIX = "vault"
COLORS = {
    "raw": "#555555",
    "tus_whole": "#1f77b4",
    "tus_5mib": "#2ca02c",
    "tus_1mib": "#d62728",
    "tus_5mib_sha256": "#9467bd",
}


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    patch_bytes: int | None  # None: the raw single request; 0: one PATCH, whole file
    checksum: bool = False

    @property
    def tus(self) -> bool:
        return self.patch_bytes is not None

    def pieces(self, size: int) -> list[tuple[int, int]]:
        """(offset, length) of each PATCH."""
        step = size if not self.patch_bytes else self.patch_bytes
        return [(at, min(step, size - at)) for at in range(0, size, step)]


def variants(patch_mib: list[float], checksum_mib: list[float]) -> list[Variant]:
    def tus(mib: float, checksum: bool) -> Variant:
        label = "whole" if mib == 0 else f"{mib:g}mib".replace(".", "_")
        return Variant(f"tus_{label}" + ("_sha256" if checksum else ""), round(mib * MiB), checksum)

    return [
        Variant("raw", None),
        *(tus(m, False) for m in patch_mib),
        *(tus(m, True) for m in checksum_mib),
    ]


# --------------------------------------------------------------------------- client


class FileBody:
    """Bytes ``[offset, offset + length)`` of an open file, read as they are sent.

    ``sent_at`` is set when httpx asks for more after the last piece, i.e. once the
    last byte has been handed to the socket.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd, self.offset, self.length = fd, offset, length
        self.sent_at: float | None = None

    def __iter__(self) -> Iterator[bytes]:
        at, end = self.offset, self.offset + self.length
        while at < end:
            piece = os.pread(self.fd, min(READ_BYTES, end - at), at)
            if not piece:
                raise RuntimeError("the payload file is shorter than expected")
            at += len(piece)
            yield piece
        self.sent_at = time.perf_counter()


@dataclass
class Sent:
    response: httpx.Response
    seconds: float
    tail_s: float  # last body byte to the socket -> answer


def send(
    client: httpx.Client, method: str, url: str, headers: dict[str, str], body: FileBody
) -> Sent:
    headers = {**headers, "Content-Length": str(body.length)}  # no chunked encoding
    started = time.perf_counter()
    response = client.request(method, url, headers=headers, content=body)
    ended = time.perf_counter()
    sent = body.sent_at if body.sent_at is not None else started
    return Sent(response, ended - started, ended - sent)


def metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


@dataclass
class Outcome:
    """What one upload answered, beyond its wall time."""

    document_id: str
    requests: int
    final_s: float  # the request that brought the last byte (raw: the only one)
    final_tail_s: float
    final_server_cpu_s: float
    sha256: str | None = None  # raw answers with the document; tus only with its id


class Uploader:
    """Sends the payload file as one of the variants, over one keep-alive client."""

    def __init__(self, client: httpx.Client, server: psutil.Process, patient_id: str) -> None:
        self.client = client
        self.server = server
        self.patient_id = patient_id

    def upload(
        self, fd: int, size: int, variant: Variant, checksums: list[str] | None = None
    ) -> Outcome:
        """Send the file; ``checksums``: each PATCH's Upload-Checksum header, if any."""
        return self._tus(fd, size, variant, checksums) if variant.tus else self._raw(fd, size)

    def _raw(self, fd: int, size: int) -> Outcome:
        url = (
            f"/api/v1/documents?patient_id={self.patient_id}&document_type={DOC_TYPE}"
            "&filename=big.pdf&on_duplicate=allow"
        )
        cpu = process_cpu(self.server)
        sent = send(
            self.client, "POST", url, {"Content-Type": "application/pdf"}, FileBody(fd, 0, size)
        )
        cpu = process_cpu(self.server) - cpu
        if sent.response.status_code != 201:
            raise RuntimeError(f"raw upload: {sent.response.status_code} {sent.response.text}")
        doc = sent.response.json()
        return Outcome(doc["id"], 1, sent.seconds, sent.tail_s, cpu, doc["sha256"])

    def _tus(self, fd: int, size: int, variant: Variant, checksums: list[str] | None) -> Outcome:
        created = self.client.post(
            "/api/v1/uploads",
            headers={
                **TUS,
                "Upload-Length": str(size),
                "Upload-Metadata": metadata(
                    patient_id=self.patient_id,
                    document_type=DOC_TYPE,
                    filename="big.pdf",
                    on_duplicate="allow",
                ),
            },
        )
        if created.status_code != 201:
            raise RuntimeError(f"tus creation: {created.status_code} {created.text}")
        url = created.headers["Location"]
        pieces = variant.pieces(size)
        last: Sent | None = None
        cpu = 0.0
        for index, (at, length) in enumerate(pieces):
            headers = {**TUS, "Upload-Offset": str(at), "Content-Type": PATCH_TYPE}
            if checksums is not None:
                headers["Upload-Checksum"] = checksums[index]
            final = index == len(pieces) - 1
            if final:
                cpu = process_cpu(self.server)
            last = send(self.client, "PATCH", url, headers, FileBody(fd, at, length))
            answer = last.response
            if answer.status_code != 204 or int(answer.headers["Upload-Offset"]) != at + length:
                raise RuntimeError(
                    f"PATCH at {at}: {answer.status_code} {answer.headers} {answer.text}"
                )
        assert last is not None
        cpu = process_cpu(self.server) - cpu
        document_id = last.response.headers["Medvault-Document-Id"]
        return Outcome(document_id, 1 + len(pieces), last.seconds, last.tail_s, cpu)

    def document_sha256(self, document_id: str) -> str:
        answer = self.client.get(f"/api/v1/documents/{document_id}")
        answer.raise_for_status()
        sha: str = answer.json()["sha256"]
        return sha


# --------------------------------------------------------------------------- the store


class BlobProbe(Protocol):
    def keys(self, prefix: str) -> set[str]: ...
    def delete(self, keys: set[str]) -> None: ...


class FileProbe:
    """The vault's blob folder, which the benchmark owns (it made the data dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def keys(self, prefix: str) -> set[str]:
        base = self.root / prefix
        if not base.exists():
            return set()
        return {p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()}

    def delete(self, keys: set[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)


class S3Probe:
    def __init__(self, endpoint_url: str) -> None:
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")

    def keys(self, prefix: str) -> set[str]:
        found: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=S3_BUCKET, Prefix=f"{S3_PREFIX}/{prefix}"):
            found.update(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        return found

    def delete(self, keys: set[str]) -> None:
        for key in keys:
            self.s3.delete_object(Bucket=S3_BUCKET, Key=key)


@contextlib.contextmanager
def moto_s3(workdir: Path) -> Iterator[str]:
    """moto's S3 server as a subprocess (its own session), with the bucket made."""
    port = free_port()
    server = ServerProcess(
        name="moto",
        argv=[str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(port)],
        env=dict(os.environ),
        log_path=workdir / "moto.log",
    )
    url = f"http://{HOST}:{port}"
    server.start()
    try:
        assert server.proc is not None
        wait_for_http(f"{url}/moto-api/", proc=server.proc)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
            Bucket=S3_BUCKET
        )
        yield url
    finally:
        server.stop()


# --------------------------------------------------------------------------- measuring


@dataclass
class Record:
    size: int
    variant: str
    rep: int
    seconds: float
    outcome: Outcome
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    server_minor_faults: int
    rss_before: int
    rss_peak: int
    window: tuple[float, float]
    sha256_ok: bool = False
    staged_left: int = 0

    @property
    def mb_s(self) -> float:
        return self.size / self.seconds / MB

    def row(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "rep": self.rep,
            "seconds": round(self.seconds, 4),
            "mb_s": round(self.mb_s, 1),
            "requests": o.requests,
            "final_request_s": round(o.final_s, 4),
            "final_tail_s": round(o.final_tail_s, 4),
            "before_final_request_s": round(self.seconds - o.final_s, 4),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "final_request_server_cpu_s": round(o.final_server_cpu_s, 3),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            # Cores that other processes on the machine kept busy meanwhile (not ours).
            "other_cores": round(self.other_cpu_s / self.seconds, 2),
            "server_minor_faults": self.server_minor_faults,
            "rss_before_mib": round(self.rss_before / MiB, 1),
            "rss_peak_mib": round(self.rss_peak / MiB, 1),
            "rss_growth_mib": round(max(0, self.rss_peak - self.rss_before) / MiB, 1),
            "sha256_ok": self.sha256_ok,
            "staged_chunks_left": self.staged_left,
        }


class Bench:
    def __init__(self, uploader: Uploader, sampler: RssSampler, probe: BlobProbe, fd: int) -> None:
        self.uploader = uploader
        self.sampler = sampler
        self.probe = probe
        self.fd = fd
        self.server = psutil.Process(sampler.pid)
        self.me = psutil.Process()
        self.records: list[Record] = []
        # The file's Upload-Checksum headers per PATCH size, made before any timing.
        self.checksums: dict[int, list[str]] = {}

    def checksums_for(self, size: int, variant: Variant) -> list[str] | None:
        if not variant.checksum or variant.patch_bytes is None:
            return None
        if variant.patch_bytes not in self.checksums:
            headers = []
            for at, length in variant.pieces(size):
                digest = hashlib.sha256()
                for piece in FileBody(self.fd, at, length):
                    digest.update(piece)
                headers.append(f"sha256 {base64.b64encode(digest.digest()).decode()}")
            self.checksums[variant.patch_bytes] = headers
        return self.checksums[variant.patch_bytes]

    def once(self, size: int, variant: Variant, rep: int, expected_sha: str) -> Record:
        """One upload, timed; then (untimed) its hash checked and its blob deleted."""
        checksums = self.checksums_for(size, variant)
        versions_before = self.probe.keys("versions/")
        server_cpu, client_cpu, busy = process_cpu(self.server), process_cpu(self.me), busy_cpu()
        faults = minor_faults(self.server.pid)
        with self.sampler.window() as win:
            started = time.perf_counter()
            outcome = self.uploader.upload(self.fd, size, variant, checksums)
            seconds = time.perf_counter() - started
        server_cpu = process_cpu(self.server) - server_cpu
        client_cpu = process_cpu(self.me) - client_cpu
        record = Record(
            size=size,
            variant=variant.name,
            rep=rep,
            seconds=seconds,
            outcome=outcome,
            server_cpu_s=server_cpu,
            client_cpu_s=client_cpu,
            other_cpu_s=busy_cpu() - busy - server_cpu - client_cpu,
            server_minor_faults=minor_faults(self.server.pid) - faults,
            rss_before=win.before,
            rss_peak=win.peak,
            window=(win.start, win.end),
        )
        sha = outcome.sha256 or self.uploader.document_sha256(outcome.document_id)
        record.sha256_ok = sha == expected_sha
        record.staged_left = len(self.probe.keys("uploads/"))
        self.probe.delete(self.probe.keys("versions/") - versions_before)
        if not record.sha256_ok:
            raise RuntimeError(f"{variant.name}: stored SHA-256 {sha} != {expected_sha}")
        return record

    def warm(self, size: int, variant: Variant, expected_sha: str) -> None:
        self.once(size, variant, 0, expected_sha)

    def measured(self, size: int, variant: Variant, rep: int, expected_sha: str) -> None:
        record = self.once(size, variant, rep, expected_sha)
        self.records.append(record)
        o = record.outcome
        print(
            f"  {size // MiB:>5} MiB rep {rep} {variant.name:<16} {record.seconds:7.3f} s "
            f"{record.mb_s:7.1f} MB/s  final req {o.final_s:6.3f} s (tail {o.final_tail_s:6.3f})"
            f"  {o.requests:>4} req  CPU srv {record.server_cpu_s:5.2f} cli "
            f"{record.client_cpu_s:5.2f}  RSS {record.rss_peak / MiB:6.1f} MiB"
            f" (+{max(0, record.rss_peak - record.rss_before) / MiB:4.1f})"
            + (f"  STAGED LEFT {record.staged_left}" if record.staged_left else "")
        )


# --------------------------------------------------------------------------- summary


def summarize(records: list[Record], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sorted({r.size for r in records}):
        at_size = [r for r in records if r.size == size]
        raw_by_rep = {r.rep: r.seconds for r in at_size if r.variant == "raw"}
        raw_median = median(list(raw_by_rep.values()))
        raw_cpu = median([r.server_cpu_s for r in at_size if r.variant == "raw"])
        per_size: dict[str, Any] = {}
        for name in names:
            items = [r for r in at_size if r.variant == name]
            if not items:
                continue
            med = median([r.seconds for r in items])
            final_tail = median([r.outcome.final_tail_s for r in items])
            per_size[name] = {
                "median_s": round(med, 4),
                "median_mb_s": round(size / med / MB, 1),
                "time_ratio_to_raw": round(med / raw_median, 3),
                "time_ratio_to_raw_per_rep": [
                    round(r.seconds / raw_by_rep[r.rep], 3) for r in items if r.rep in raw_by_rep
                ],
                "extra_s_over_raw": round(med - raw_median, 4),
                "requests": items[0].outcome.requests,
                "median_final_request_s": round(median([r.outcome.final_s for r in items]), 4),
                "median_final_tail_s": round(final_tail, 4),
                "median_before_final_request_s": round(
                    median([r.seconds - r.outcome.final_s for r in items]), 4
                ),
                "final_tail_share": round(
                    median([r.outcome.final_tail_s / r.seconds for r in items]), 3
                ),
                "median_server_cpu_s": round(median([r.server_cpu_s for r in items]), 3),
                # Less sensitive than wall time to other work on the machine.
                "server_cpu_ratio_to_raw": round(
                    median([r.server_cpu_s for r in items]) / raw_cpu, 3
                ),
                "median_other_cores": round(median([r.other_cpu_s / r.seconds for r in items]), 2),
                "median_final_request_server_cpu_s": round(
                    median([r.outcome.final_server_cpu_s for r in items]), 3
                ),
                "median_client_cpu_s": round(median([r.client_cpu_s for r in items]), 3),
                "max_rss_peak_mib": round(max(r.rss_peak for r in items) / MiB, 1),
                "max_rss_growth_mib": round(
                    max(max(0, r.rss_peak - r.rss_before) for r in items) / MiB, 1
                ),
                "median_server_minor_faults": median([r.server_minor_faults for r in items]),
                "all_sha256_ok": all(r.sha256_ok for r in items),
                "max_staged_chunks_left": max(r.staged_left for r in items),
                "runs": [r.row() for r in items],
            }
        out[f"{size // MiB}MiB"] = per_size
    return out


# --------------------------------------------------------------------------- plot


def plot(
    summary: dict[str, Any],
    names: list[str],
    samples: list[tuple[float, int]],
    records: list[Record],
    name: str,
    title: str,
) -> Path:
    fig, (ax_tp, ax_split, ax_rss) = new_figure(3, width=5.6, height=4.8)
    sizes = list(summary)
    width = 0.8 / len(names)
    for i, variant in enumerate(names):
        xs, ys, ratios = [], [], []
        for j, size in enumerate(sizes):
            if variant in summary[size]:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(summary[size][variant]["median_mb_s"])
                ratios.append(summary[size][variant]["time_ratio_to_raw"])
        ax_tp.bar(xs, ys, width=width * 0.95, color=COLORS.get(variant), label=variant)
        for x, y, ratio in zip(xs, ys, ratios, strict=True):
            ax_tp.annotate(
                f"{ratio:.2f}x",
                (x, y),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax_tp.set_xticks(range(len(sizes)), sizes)
    ax_tp.set_ylabel("median MB/s (10^6 B/s); label = time / raw's time")
    ax_tp.set_title(title, fontsize=9)
    ax_tp.legend(fontsize=7, loc="upper right", ncols=2)
    top = max(d["median_mb_s"] for per in summary.values() for d in per.values())
    ax_tp.set_ylim(0, top * 1.45)

    largest = sizes[-1]
    for y, variant in enumerate(names):
        data = summary[largest].get(variant)
        if data is None:
            continue
        before = data["median_before_final_request_s"]
        receiving = max(0.0, data["median_final_request_s"] - data["median_final_tail_s"])
        tail = data["median_final_tail_s"]
        ax_split.barh(
            y, before, color="#bbbbbb", label="requests before the last" if y == 0 else None
        )
        ax_split.barh(
            y,
            receiving,
            left=before,
            color="#7fa7d1",
            label="last request: body" if y == 0 else None,
        )
        ax_split.barh(
            y,
            tail,
            left=before + receiving,
            color="#d1495b",
            label="last request: after its last byte" if y == 0 else None,
        )
        ax_split.annotate(
            f"{data['median_s']:.2f} s",
            (before + receiving + tail, y),
            va="center",
            fontsize=7,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax_split.set_yticks(range(len(names)), names, fontsize=8)
    ax_split.invert_yaxis()
    ax_split.set_xlabel("median seconds")
    ax_split.set_title(f"{largest}: where the time goes", fontsize=9)
    ax_split.legend(fontsize=7, loc="upper right")
    ax_split.margins(x=0.2)

    if samples:
        t0 = samples[0][0]
        ax_rss.plot([t - t0 for t, _ in samples], [r / MiB for _, r in samples], "k-", lw=0.8)
        seen: set[str] = set()
        for r in records:
            ax_rss.axvspan(
                r.window[0] - t0,
                r.window[1] - t0,
                color=COLORS.get(r.variant, "#999999"),
                alpha=0.3,
                lw=0,
                label=r.variant if r.variant not in seen else None,
            )
            seen.add(r.variant)
        low = min(r for _, r in samples) / MiB
        high = max(r for _, r in samples) / MiB
        ax_rss.set_ylim(max(0.0, low - 20), high + 30)
        ax_rss.set_xlabel("seconds")
        ax_rss.set_ylabel("vault server RSS (MiB)")
        ax_rss.set_title("Vault RSS every 50 ms (shaded: upload in flight)", fontsize=9)
        ax_rss.legend(fontsize=6, loc="upper left", ncols=2)
    return save_figure(fig, name)


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def vault_env(args: argparse.Namespace, workdir: Path, largest: int) -> Iterator[dict[str, str]]:
    env = {
        "MEDVAULT_MAX_UPLOAD_BYTES": str(max(2 * GiB, 2 * largest)),
        "MEDVAULT_SERVER_WORKERS": "1",  # RSS and CPU are then the one process's
        "MEDVAULT_EMBEDDED_WORKER": "false",
        "MEDVAULT_UPLOAD_RATE_LIMIT": "1000000/minute",
    }
    with contextlib.ExitStack() as stack:
        if args.backend == "postgres":
            dbs = stack.enter_context(bench_databases())
            env["MEDVAULT_DATABASE_URL"] = PG_URL.format(db=dbs["clinical"])
            env["MEDVAULT_AUTH_DATABASE_URL"] = PG_URL.format(db=dbs["auth"])
        if args.storage == "s3":
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ.setdefault(key, "bench")  # moto accepts any; boto3 wants some
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            url = stack.enter_context(moto_s3(workdir))
            env["MEDVAULT_STORAGE_URL"] = f"s3://{S3_BUCKET}/{S3_PREFIX}"
            env["MEDVAULT_S3_ENDPOINT_URL"] = url
            env["MEDVAULT_S3_REGION"] = "us-east-1"
        yield env


def main() -> int:
    parser = argparse.ArgumentParser(description="tus uploads against the raw single request.")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--reps", type=int, default=3, help="Rounds (default 3)")
    parser.add_argument(
        "--patch-mib",
        type=float,
        nargs="+",
        default=[0, 5, 1],
        help="PATCH sizes of the tus variants, MiB; 0 = the whole file (default 0 5 1)",
    )
    parser.add_argument(
        "--checksum-patch-mib",
        type=float,
        nargs="*",
        default=[5],
        help="PATCH sizes of tus variants with Upload-Checksum sha256 (default 5; none: off)",
    )
    parser.add_argument("--payload", choices=("pdf", "random"), default="pdf")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--storage", choices=("file", "s3"), default="file")
    parser.add_argument("--name", default=NAME, help="Result file name under bench/results")
    args = parser.parse_args()

    sizes = [s * MiB for s in args.sizes_mib]
    chosen = variants(args.patch_mib, args.checksum_patch_mib)
    names = [v.name for v in chosen]
    workdir = Path(tempfile.mkdtemp(prefix="medvault-bench-tus-"))
    load_before = os.getloadavg()
    started_run = time.perf_counter()
    try:
        with vault_env(args, workdir, max(sizes)) as env, VaultServer(extra_env=env) as vault:
            probe: BlobProbe = (
                S3Probe(env["MEDVAULT_S3_ENDPOINT_URL"])
                if args.storage == "s3"
                else FileProbe(vault.data_dir / "blobs")
            )
            with (
                vault.client(timeout=1800.0) as client,
                RssSampler(vault.pid) as sampler,
            ):
                uploader = Uploader(client, psutil.Process(vault.pid), vault.create_patient(client))
                write_payload = (
                    write_wellformed_pdf if args.payload == "pdf" else write_synthetic_pdf
                )
                # Imports, pools, first requests: every variant once on a small file.
                small = workdir / "small.pdf"
                write_payload(small, 3 * MiB)
                fd = os.open(small, os.O_RDONLY)
                try:
                    bench = Bench(uploader, sampler, probe, fd)
                    for variant in chosen:
                        bench.warm(3 * MiB, variant, sha256_file(small))
                finally:
                    os.close(fd)
                records: list[Record] = []
                for size in sizes:
                    path = workdir / f"payload-{size // MiB}.pdf"
                    write_payload(path, size)
                    expected = sha256_file(path)
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        bench = Bench(uploader, sampler, probe, fd)
                        bench.warm(size, chosen[0], expected)
                        bench.warm(size, next(v for v in chosen if v.tus), expected)
                        for rep in range(1, args.reps + 1):
                            shift = (rep - 1) % len(chosen)
                            for variant in chosen[shift:] + chosen[:shift]:
                                bench.measured(size, variant, rep, expected)
                        records += bench.records
                    finally:
                        os.close(fd)
                        path.unlink()
                samples = list(sampler.samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - started_run

    summary = summarize(records, names)
    title = (
        f"tus vs raw upload, {args.backend} + {args.storage}, median of {args.reps} (httpx client)"
    )
    result = {
        "benchmark": args.name,
        "machine": machine_info(),
        "config": {
            "sizes_bytes": sizes,
            "reps": args.reps,
            "variants": {
                v.name: {"patch_bytes": v.patch_bytes, "upload_checksum_sha256": v.checksum}
                for v in chosen
            },
            "payload": args.payload,
            "backend": args.backend,
            "storage": args.storage,
            "client": "httpx.Client, keep-alive, bodies streamed from the file in 1 MiB reads "
            "with Content-Length",
            "server": "medvault serve, 1 process, embedded worker off, rate limit lifted",
            "mb": "10^6 bytes",
            "time_ratio_to_raw": "median seconds / raw's median seconds at the same size "
            "(> 1: slower)",
            "final_tail": "from the last body byte of the final request handed to the socket "
            "to its answer: the completion pass (tus) or the post-body work (raw)",
            "rss_sample_interval_s": sampler.interval,
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "elapsed_s": round(elapsed, 1),
        },
        "summary": summary,
    }
    json_path = write_json(args.name, result)
    png_path = plot(summary, names, samples, records, args.name, title)

    print(f"\nmedians of {args.reps} rounds ({args.backend} + {args.storage}, MB = 10^6 B):")
    print(
        f"  {'size':>7} {'variant':<16} {'s':>7} {'MB/s':>7} {'time x':>6} {'req':>5} "
        f"{'last req':>8} {'tail':>6} {'tail %':>6} {'srv CPU':>7} {'CPU x':>6} "
        f"{'RSS pk':>7} {'+RSS':>5} {'others':>6}"
    )
    for size, per in summary.items():
        for variant, d in per.items():
            print(
                f"  {size:>7} {variant:<16} {d['median_s']:7.3f} {d['median_mb_s']:7.1f} "
                f"{d['time_ratio_to_raw']:6.2f} {d['requests']:>5} "
                f"{d['median_final_request_s']:8.3f} {d['median_final_tail_s']:6.3f} "
                f"{100 * d['final_tail_share']:5.1f}% {d['median_server_cpu_s']:7.2f} "
                f"{d['server_cpu_ratio_to_raw']:6.2f} {d['max_rss_peak_mib']:7.1f} "
                f"{d['max_rss_growth_mib']:5.1f} {d['median_other_cores']:6.2f}"
            )
    busy = median([r.other_cpu_s / r.seconds for r in records])
    if busy > 0.25:
        print(
            f"NOTE: other processes kept {busy:.2f} of the {os.cpu_count()} cores busy during "
            "the uploads (median); wall times are noisy, server CPU less so."
        )
    print(f"{elapsed:.0f} s in all; wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
