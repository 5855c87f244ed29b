"""Large-file throughput and server memory: 1 GiB up (raw and multipart) and down.

In one run, interleaved so drift hits every variant alike, each repetition does:

* baseline upload (bench/baseline_app.py: stream to disk + SHA-256 + fsync) and
  baseline download of that file;
* vault raw-body upload, vault multipart upload, vault download of the raw upload.

Transfers use curl (a C client, so the 2 cores go to the server, not to the client).
curl streams ``-T`` and ``-F file=@...`` from disk; ``Expect:`` is blanked so curl
does not wait for a ``100 Continue`` before sending the body. Each transfer is timed
by curl (``time_total``); the server's RSS is sampled every 50 ms and growth is the
peak during the transfer minus the RSS just before it.

    .venv/bin/python bench/large_files.py            # 1 GiB, 3 repetitions
    .venv/bin/python bench/large_files.py --size-mib 256 --runs 1   # quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from common import (
    BENCH_DIR,
    HOST,
    MB,
    GiB,
    MiB,
    RssSampler,
    ServerProcess,
    VaultServer,
    free_port,
    machine_info,
    median,
    new_figure,
    prewarm_guest_memory,
    save_figure,
    wait_for_http,
    write_json,
    write_synthetic_pdf,
)

NAME = "large_files"
TARGETS = {
    "raw_vs_baseline_min_ratio": 0.8,
    "multipart_min_mb_s": 250.0,
    "download_min_mb_s": 500.0,
    "rss_growth_max_mib": 64.0,
}
DOC_TYPE = "11502-2"


@dataclass
class Transfer:
    kind: str
    run: int
    seconds: float
    bytes: int
    rss_before: int
    rss_peak: int
    cpu_seconds: float
    window: tuple[float, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / MB

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_before)


def curl(args: list[str], *, body_path: Path | None) -> dict[str, Any]:
    """Run curl; returns curl's ``%{json}`` write-out plus the response body if kept."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            "Expect:",
            "-o",
            str(body_path) if body_path else "/dev/null",
            "-w",
            "%{json}",
            *args,
        ],
        capture_output=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"curl failed ({out.returncode}): {out.stderr.decode()}")
    info: dict[str, Any] = json.loads(out.stdout)
    if body_path is not None:
        info["body"] = body_path.read_text(errors="replace")
    return info


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(
    kind: str,
    run: int,
    sampler: RssSampler,
    args: list[str],
    *,
    body_path: Path | None,
    expect_status: int,
    size_key: str,
) -> tuple[Transfer, dict[str, Any]]:
    proc = psutil.Process(sampler.pid)
    cpu_before = cpu_seconds(proc)
    with sampler.window() as win:
        info = curl(args, body_path=body_path)
    cpu_used = cpu_seconds(proc) - cpu_before
    if info["http_code"] != expect_status:
        raise RuntimeError(f"{kind}: HTTP {info['http_code']}: {info.get('body', '')[:500]}")
    transfer = Transfer(
        kind=kind,
        run=run,
        seconds=float(info["time_total"]),
        bytes=int(info[size_key]),
        rss_before=win.before,
        rss_peak=win.peak,
        cpu_seconds=cpu_used,
        window=(win.start, win.end),
    )
    print(
        f"  run {run} {kind:<18} {transfer.mb_s:7.1f} MB/s  {transfer.seconds:6.2f} s  "
        f"RSS +{transfer.rss_growth / MiB:5.1f} MiB  server CPU {cpu_used:5.2f} s"
    )
    return transfer, info


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def verify_download(vault: VaultServer, document_id: str, expected_sha: str) -> bool:
    """One extra, untimed download hashed on the client, to prove the bytes round-trip."""
    digest = hashlib.sha256()
    with (
        vault.client(timeout=600.0) as client,
        client.stream("GET", f"/api/v1/documents/{document_id}/content") as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes(MiB):
            digest.update(chunk)
    return digest.hexdigest() == expected_sha


def summarize(transfers: list[Transfer]) -> dict[str, Any]:
    kinds: dict[str, list[Transfer]] = {}
    for t in transfers:
        kinds.setdefault(t.kind, []).append(t)
    out: dict[str, Any] = {}
    for kind, items in kinds.items():
        out[kind] = {
            "median_mb_s": round(median([t.mb_s for t in items]), 1),
            "median_seconds": round(median([t.seconds for t in items]), 3),
            "median_rss_growth_mib": round(median([t.rss_growth / MiB for t in items]), 1),
            "max_rss_growth_mib": round(max(t.rss_growth / MiB for t in items), 1),
            "median_server_cpu_s": round(median([t.cpu_seconds for t in items]), 2),
            "runs": [
                {
                    "mb_s": round(t.mb_s, 1),
                    "seconds": round(t.seconds, 3),
                    "bytes": t.bytes,
                    "rss_before_mib": round(t.rss_before / MiB, 1),
                    "rss_peak_mib": round(t.rss_peak / MiB, 1),
                    "rss_growth_mib": round(t.rss_growth / MiB, 1),
                    "server_cpu_s": round(t.cpu_seconds, 2),
                    **t.extra,
                }
                for t in items
            ],
        }
    return out


def plot(
    summary: dict[str, Any],
    vault_samples: list[tuple[float, int]],
    vault_transfers: list[Transfer],
    size: int,
) -> Path:
    fig, (ax_tp, ax_rss) = new_figure(2, width=6.4, height=4.4)
    order = [
        ("baseline_upload", "baseline\nupload", "#aaaaaa"),
        ("baseline_batched_upload", "baseline\nbatched", "#777777"),
        ("vault_raw_upload", "vault raw\nupload", "#1f77b4"),
        ("vault_multipart_upload", "vault multi-\npart upload", "#2ca02c"),
        ("vault_download", "vault\ndownload", "#d62728"),
        ("baseline_download", "baseline\ndownload", "#bbbbbb"),
    ]
    present = [o for o in order if o[0] in summary]
    for x, (kind, _, color) in enumerate(present):
        runs = [r["mb_s"] for r in summary[kind]["runs"]]
        med = summary[kind]["median_mb_s"]
        ax_tp.bar(x, med, color=color, width=0.65)
        ax_tp.scatter([x] * len(runs), runs, color="black", s=12, zorder=3)
        ax_tp.annotate(
            f"{med:.0f}",
            (x, med),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax_tp.set_xticks(range(len(present)), [label for _, label, _ in present], fontsize=8)
    ax_tp.axhline(
        TARGETS["multipart_min_mb_s"], color="#2ca02c", ls=":", lw=1, label="multipart target 250"
    )
    ax_tp.axhline(
        TARGETS["download_min_mb_s"], color="#d62728", ls=":", lw=1, label="download target 500"
    )
    baseline_kinds = ("baseline_upload", "baseline_batched_upload")
    bases = [summary[k]["median_mb_s"] for k in baseline_kinds if k in summary]
    if bases:
        best = 0.8 * max(bases)
        ax_tp.axhline(best, color="#1f77b4", ls="--", lw=1, label="raw target 0.8x best baseline")
    ax_tp.set_ylabel("MB/s (10^6 bytes/s), bar = median, dots = runs")
    ax_tp.set_title(f"{size / GiB:.2f} GiB transfers over 127.0.0.1")
    ax_tp.legend(fontsize=7, loc="upper left")

    if vault_samples:
        t0 = vault_samples[0][0]
        ax_rss.plot(
            [t - t0 for t, _ in vault_samples],
            [r / MiB for _, r in vault_samples],
            color="black",
            lw=1,
        )
        colors = {kind: color for kind, _, color in order}
        seen: set[str] = set()
        for tr in vault_transfers:
            label = tr.kind if tr.kind not in seen else None
            seen.add(tr.kind)
            ax_rss.axvspan(
                tr.window[0] - t0, tr.window[1] - t0, color=colors[tr.kind], alpha=0.25, label=label
            )
        ax_rss.set_xlabel("seconds since vault start of measurements")
        ax_rss.set_ylabel("vault server RSS (MiB)")
        ax_rss.set_title("Vault RSS, sampled every 50 ms (shaded = transfer)")
        ax_rss.legend(fontsize=7, loc="lower right")
        low = min(r for _, r in vault_samples) / MiB
        ax_rss.set_ylim(
            max(0, low - 20), max(low + 100, max(r for _, r in vault_samples) / MiB + 20)
        )
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description="1 GiB upload/download throughput and RSS.")
    parser.add_argument("--size-mib", type=int, default=1024, help="File size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="Repetitions (default 3)")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="Skip the untimed, client-hashed verification download",
    )
    parser.add_argument(
        "--no-prewarm",
        action="store_true",
        help="Do not touch guest memory first (see prewarm_guest_memory in common.py)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Where to put the synthetic file (default: a temp dir)",
    )
    args = parser.parse_args()

    size = args.size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="medvault-bench-large-", dir=args.workdir))
    baseline_port = free_port()
    baseline = ServerProcess(
        name="baseline",
        argv=[
            sys.executable,
            str(BENCH_DIR / "baseline_app.py"),
            "--port",
            str(baseline_port),
            "--dir",
            str(workdir / "baseline-store"),
        ],
        env=dict(os.environ),
        log_path=workdir / "baseline.log",
    )
    transfers: list[Transfer] = []
    # Enough for every page this run writes: the source file, the vault's blobs
    # (two uploads per run plus warm-up) and the baseline's file, plus headroom.
    warm_gib = 0 if args.no_prewarm else math.ceil((2 * args.runs + 3) * size / GiB) + 1
    prewarm = prewarm_guest_memory(warm_gib)
    if warm_gib:
        print(f"pre-warmed {warm_gib} GiB of guest memory at {prewarm['gb_s']} GB/s")
    try:
        src = workdir / "synthetic.pdf"
        started = time.perf_counter()
        write_synthetic_pdf(src, size)
        expected_sha = sha256_file(src)
        print(f"synthetic file: {size / MiB:.0f} MiB in {time.perf_counter() - started:.1f} s")

        baseline.start()
        assert baseline.proc is not None
        baseline_url = f"http://{HOST}:{baseline_port}"
        wait_for_http(f"{baseline_url}/healthz", proc=baseline.proc)

        vault_env = {"MEDVAULT_MAX_UPLOAD_BYTES": str(max(2 * GiB, 2 * size))}
        with (
            VaultServer(extra_env=vault_env) as vault,
            RssSampler(baseline.pid) as base_rss,
            RssSampler(vault.pid) as vault_rss,
        ):
            patient_id = vault.create_patient()
            auth = ["-H", f"Authorization: Bearer {vault.token}"]
            raw_url = (
                f"{vault.base_url}/api/v1/documents?patient_id={patient_id}"
                f"&document_type={DOC_TYPE}&filename=big.pdf&on_duplicate=allow"
            )

            def raw_args(path: Path) -> list[str]:
                return [*auth, "-X", "POST", "-H", "Content-Type: application/pdf",
                        "-T", str(path), raw_url]  # fmt: skip

            def multipart_args(path: Path) -> list[str]:
                # Fields first, so the vault can check the patient before the file streams.
                return [
                    *auth,
                    "-F", f"patient_id={patient_id}",
                    "-F", f"document_type={DOC_TYPE}",
                    "-F", "on_duplicate=allow",
                    "-F", f"file=@{path};type=application/pdf",
                    f"{vault.base_url}/api/v1/documents",
                ]  # fmt: skip

            body = workdir / "body.json"

            # Warm-up: a small file through every path, so imports and pools are ready.
            small = workdir / "small.pdf"
            write_synthetic_pdf(small, 2 * MiB)
            curl(raw_args(small), body_path=body)
            curl(multipart_args(small), body_path=body)
            for endpoint in ("/upload", "/upload-batched"):
                curl(["-X", "POST", "-T", str(small), f"{baseline_url}{endpoint}"], body_path=body)

            def baseline_round(kind: str, endpoint: str, run: int) -> None:
                tr, info = measure(
                    kind,
                    run,
                    base_rss,
                    ["-X", "POST", "-H", "Content-Type: application/pdf", "-T", str(src),
                     f"{baseline_url}{endpoint}"],
                    body_path=body,
                    expect_status=201,
                    size_key="size_upload",
                )  # fmt: skip
                answer = json.loads(info["body"])
                tr.extra = {
                    "server_receive_s": answer["receive_s"],
                    "server_fsync_s": answer["fsync_s"],
                    "sha256_ok": answer["sha256"] == expected_sha,
                }
                transfers.append(tr)
                if kind == "baseline_upload":
                    tr, _ = measure(
                        "baseline_download",
                        run,
                        base_rss,
                        [f"{baseline_url}/files/{answer['name']}"],
                        body_path=None,
                        expect_status=200,
                        size_key="size_download",
                    )
                    transfers.append(tr)
                # Deleted at once, so the baseline never reads from a fuller page cache.
                curl(["-X", "DELETE", f"{baseline_url}/files/{answer['name']}"], body_path=None)

            for run in range(1, args.runs + 1):
                baseline_round("baseline_upload", "/upload", run)
                baseline_round("baseline_batched_upload", "/upload-batched", run)

                tr, info = measure(
                    "vault_raw_upload",
                    run,
                    vault_rss,
                    raw_args(src),
                    body_path=body,
                    expect_status=201,
                    size_key="size_upload",
                )
                raw_doc = json.loads(info["body"])
                tr.extra = {"sha256_ok": raw_doc["sha256"] == expected_sha}
                transfers.append(tr)

                tr, info = measure(
                    "vault_multipart_upload",
                    run,
                    vault_rss,
                    multipart_args(src),
                    body_path=body,
                    expect_status=201,
                    size_key="size_upload",
                )
                tr.extra = {"sha256_ok": json.loads(info["body"])["sha256"] == expected_sha}
                transfers.append(tr)

                tr, _ = measure(
                    "vault_download",
                    run,
                    vault_rss,
                    [*auth, f"{vault.base_url}/api/v1/documents/{raw_doc['id']}/content"],
                    body_path=None,
                    expect_status=200,
                    size_key="size_download",
                )
                tr.extra = {"size_ok": tr.bytes == size}
                transfers.append(tr)

            verified = (
                None if args.no_verify else verify_download(vault, raw_doc["id"], expected_sha)
            )
            vault_samples = list(vault_rss.samples)
    finally:
        baseline.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(transfers)
    raw = summary["vault_raw_upload"]["median_mb_s"]
    # The reference is the faster of the two baseline variants, so the ratio is never
    # flattered by a naive baseline.
    base_kind = max(
        ("baseline_upload", "baseline_batched_upload"), key=lambda k: summary[k]["median_mb_s"]
    )
    base = summary[base_kind]["median_mb_s"]
    ratio = raw / base
    vault_kinds = ("vault_raw_upload", "vault_multipart_upload", "vault_download")
    max_growth = max(summary[k]["max_rss_growth_mib"] for k in vault_kinds)
    targets = {
        "raw_vs_baseline": {
            "value": round(ratio, 3),
            "target": f">= 0.8 x {base_kind} ({base} MB/s)",
            "met": ratio >= TARGETS["raw_vs_baseline_min_ratio"],
        },
        "multipart_mb_s": {
            "value": summary["vault_multipart_upload"]["median_mb_s"],
            "target": ">= 250",
            "met": summary["vault_multipart_upload"]["median_mb_s"]
            >= TARGETS["multipart_min_mb_s"],
        },
        "download_mb_s": {
            "value": summary["vault_download"]["median_mb_s"],
            "target": ">= 500",
            "met": summary["vault_download"]["median_mb_s"] >= TARGETS["download_min_mb_s"],
        },
        "rss_growth_mib": {
            "value": max_growth,
            "target": "< 64 (worst vault transfer)",
            "met": max_growth < TARGETS["rss_growth_max_mib"],
        },
    }
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "size_bytes": size,
            "runs": args.runs,
            "client": "curl",
            "mb": "10^6 bytes",
            "rss_sample_interval_s": 0.05,
            "baseline": "bench/baseline_app.py (Starlette, stream+SHA-256+fsync)",
            "prewarm": prewarm,
        },
        "summary": summary,
        "raw_upload_vs_baseline_ratio": round(ratio, 3),
        "baseline_reference": base_kind,
        "verified_download_sha256": verified,
        "targets": targets,
    }
    json_path = write_json(NAME, result)
    png_path = plot(summary, vault_samples, [t for t in transfers if t.kind in vault_kinds], size)

    print(f"\n{size / MiB:.0f} MiB, median of {args.runs} runs (MB = 10^6 bytes):")
    for kind, data in summary.items():
        print(
            f"  {kind:<24} {data['median_mb_s']:7.1f} MB/s   RSS growth median "
            f"{data['median_rss_growth_mib']:5.1f} MiB (max {data['max_rss_growth_mib']:5.1f})"
            f"   server CPU {data['median_server_cpu_s']:.2f} s"
        )
    print(f"  raw upload / baseline = {ratio:.2f} (reference: {base_kind})")
    for name, t in targets.items():
        print(
            f"  target {name:<18} {t['value']!s:>8}  {t['target']:<28} "
            f"{'MET' if t['met'] else 'MISSED'}"
        )
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
