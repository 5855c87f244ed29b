"""Does a document id out of the caller's reach answer slower than one that does not exist?

Both answer the same 404, so that existence never leaks. Issue 9 found that a foreign
id answered 1.3-4 ms slower, because only it committed an ``access.denied`` audit
event: one request told them apart with 78-98% accuracy. Since then both paths audit
the attempt and commit one event.

Setup: ``medvault serve`` with a throw-away data directory (SQLite by default,
``--postgres`` for two fresh PostgreSQL databases); an admin token registers one
patient and uploads one document; a clinician with no care team then asks, over one
keep-alive connection and one request at a time, for:

* ``foreign``: that document's id (exists, out of reach);
* ``missing_a`` / ``missing_b``: fresh random ids (two groups of the same kind, the
  null baseline: whatever separates them is noise, not a leak).

The three kinds are interleaved in a shuffled order so that drift hits all alike.
Reported: medians, the foreign-minus-missing difference, and the accuracy of a
one-request classifier: a threshold at the midpoint of the two medians measured on
the first half of the samples, scored on the held-out second half (50% is chance).
The same classifier on missing_a vs missing_b is the baseline.

    .venv/bin/python bench/existence_timing.py                 # 1,500 requests per kind
    .venv/bin/python bench/existence_timing.py --reps 300      # quick check
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg

from common import (
    PATIENT_SYSTEM,
    VaultServer,
    latency_summary_ms,
    machine_info,
    new_figure,
    save_figure,
    synthetic_pdf,
    write_json,
)

NAME = "existence_timing"
KINDS = ("foreign", "missing_a", "missing_b")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
CLINICIAN_PASSWORD = "bench-clinician-password-1"  # noqa: S105 - a throw-away vault


@contextmanager
def postgres_env(enabled: bool) -> Iterator[dict[str, str]]:
    """Settings for three fresh PostgreSQL databases (dropped afterwards), or none."""
    if not enabled:
        yield {}
        return
    stem = f"medvault_bench_{uuid.uuid4().hex[:8]}"
    names = {
        "clinical": f"{stem}_clinical",
        "auth": f"{stem}_auth",
        "patients": f"{stem}_patients",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "MEDVAULT_DATABASE_URL": PG_URL.format(db=names["clinical"]),
            "MEDVAULT_AUTH_DATABASE_URL": PG_URL.format(db=names["auth"]),
            "MEDVAULT_PATIENT_DATABASE_URL": PG_URL.format(db=names["patients"]),
        }
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _checked(response: httpx.Response, expected: int, what: str) -> httpx.Response:
    if response.status_code != expected:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
    return response


def setup(vault: VaultServer) -> tuple[str, str]:
    """Upload one document as admin; return (its id, a clinician's bearer token)."""
    with vault.client(timeout=30.0) as admin:
        patient = _checked(
            admin.post(
                "/api/v1/patients",
                json={
                    "identifier": {"system": PATIENT_SYSTEM, "value": uuid.uuid4().hex},
                    "family_name": "Bench",
                    "given_name": "Timing",
                    "birth_date": "1980-01-01",
                },
            ),
            201,
            "create patient",
        ).json()["id"]
        document = _checked(
            admin.post(
                "/api/v1/documents",
                params={"patient_id": patient, "document_type": "11488-4", "filename": "a.pdf"},
                content=synthetic_pdf(10_000),
                headers={"Content-Type": "application/pdf"},
            ),
            201,
            "upload",
        ).json()["id"]
        username = f"clin-{uuid.uuid4().hex[:8]}"
        _checked(
            admin.post(
                "/api/v1/users",
                json={
                    "username": username,
                    "email": f"{username}@example.org",
                    "password": CLINICIAN_PASSWORD,
                    "role": "clinician",
                },
            ),
            201,
            "create clinician",
        )
    with httpx.Client(base_url=vault.base_url, timeout=30.0) as anon:
        token = _checked(
            anon.post(
                "/api/v1/auth/token",
                data={"username": username, "password": CLINICIAN_PASSWORD},
            ),
            200,
            "login",
        ).json()["access_token"]
    return str(document), str(token)


def measure(
    vault: VaultServer, foreign_id: str, token: str, reps: int, warmup: int
) -> dict[str, list[float]]:
    """Latency in seconds per kind, from one shuffled, interleaved sequence."""
    rng = random.Random(9)
    order = [kind for kind in KINDS for _ in range(reps)]
    rng.shuffle(order)
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=vault.base_url, headers=headers, timeout=30.0) as client:
        for i in range(warmup):
            client.get(f"/api/v1/documents/{foreign_id if i % 2 else uuid.uuid4()}")
        for kind in order:
            target = foreign_id if kind == "foreign" else str(uuid.uuid4())
            started = time.perf_counter()
            response = client.get(f"/api/v1/documents/{target}")
            elapsed = time.perf_counter() - started
            if response.status_code != 404:
                raise RuntimeError(f"{kind}: expected 404, got {response.status_code}")
            samples[kind].append(elapsed)
    return samples


def classifier_accuracy(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Train a one-request threshold on the first halves, score it on the second halves."""
    half_a, half_b = len(a) // 2, len(b) // 2
    med_a, med_b = statistics.median(a[:half_a]), statistics.median(b[:half_b])
    threshold = (med_a + med_b) / 2
    a_is_slower = med_a > med_b
    test_a, test_b = a[half_a:], b[half_b:]
    right_a = sum((x > threshold) == a_is_slower for x in test_a)
    right_b = sum((x > threshold) != a_is_slower for x in test_b)
    # Balanced accuracy: each kind weighs the same, whatever the group sizes.
    accuracy = (right_a / len(test_a) + right_b / len(test_b)) / 2
    return {"threshold_ms": threshold * 1000, "held_out_accuracy": accuracy}


def plot(samples: dict[str, list[float]], result: dict[str, Any]) -> None:
    fig, axes = new_figure(2)
    upper = max(sorted(v)[int(len(v) * 0.98)] for v in samples.values()) * 1000
    for kind in KINDS:
        values = sorted(x * 1000 for x in samples[kind])
        axes[0].hist([v for v in values if v <= upper], bins=60, alpha=0.5, label=kind)
        axes[1].plot(values, [i / len(values) for i in range(len(values))], label=kind)
    axes[0].set_xlabel("latency (ms), up to p98")
    axes[0].set_ylabel("requests")
    axes[0].set_title("404 for a foreign vs a missing document id")
    axes[0].legend()
    axes[1].set_xlim(0, upper)
    axes[1].set_xlabel("latency (ms)")
    axes[1].set_ylabel("fraction of requests")
    leak = result["foreign_vs_missing"]
    null = result["null_baseline_missing_a_vs_b"]
    axes[1].set_title(
        f"median diff {leak['median_difference_ms']:+.3f} ms; "
        f"accuracy {leak['held_out_accuracy']:.0%} (null {null['held_out_accuracy']:.0%})"
    )
    axes[1].legend()
    save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1500, help="Requests per kind")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--postgres", action="store_true", help="Run on PostgreSQL")
    parser.add_argument("--label", default="", help="Free text stored with the result")
    args = parser.parse_args()

    with postgres_env(args.postgres) as env, VaultServer(extra_env=env) as vault:
        foreign_id, token = setup(vault)
        samples = measure(vault, foreign_id, token, args.reps, args.warmup)

    # Interleave the two missing groups so the training half spans the whole run.
    pairs = zip(samples["missing_a"], samples["missing_b"], strict=True)
    missing = [x for pair in pairs for x in pair]
    leak = classifier_accuracy(samples["foreign"], missing)
    null = classifier_accuracy(samples["missing_a"], samples["missing_b"])
    result: dict[str, Any] = {
        "benchmark": NAME,
        "label": args.label,
        "backend": "postgresql" if args.postgres else "sqlite",
        "reps_per_kind": args.reps,
        "latency_ms": {kind: latency_summary_ms(samples[kind]) for kind in KINDS},
        "foreign_vs_missing": {
            "median_difference_ms": (
                statistics.median(samples["foreign"]) - statistics.median(missing)
            )
            * 1000,
            **leak,
        },
        "null_baseline_missing_a_vs_b": {
            "median_difference_ms": (
                statistics.median(samples["missing_a"]) - statistics.median(samples["missing_b"])
            )
            * 1000,
            **null,
        },
        "machine": machine_info(),
    }
    write_json(NAME, result)
    plot(samples, result)
    lat = result["latency_ms"]
    print(
        f"median foreign {lat['foreign']['p50_ms']:.3f} ms, "
        f"missing {lat['missing_a']['p50_ms']:.3f}/"
        f"{lat['missing_b']['p50_ms']:.3f} ms; diff "
        f"{result['foreign_vs_missing']['median_difference_ms']:+.3f} ms; one-request accuracy "
        f"{leak['held_out_accuracy']:.1%} (null baseline {null['held_out_accuracy']:.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
