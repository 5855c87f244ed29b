"""Per-request cost of resolving the caller: the principal cache on and off.

For each backend (SQLite, PostgreSQL) this starts ``medvault serve`` twice per round,
once with ``MEDVAULT_PRINCIPAL_CACHE_SECONDS=0`` (every request looks its principal
up in the auth database, as before the cache existed) and once with the cache on
(``--cache-seconds``), in alternating order. Against each it runs wrk on
``GET /api/v1/auth/me`` (a route that does nothing but resolve the principal) with an
API token and with a JWT access token, and reports requests/s and latency; the
summary gives medians over the rounds and the ratio cache-on / cache-off.

    .venv/bin/python bench/principal_cache.py --rounds 3 --duration 10
    .venv/bin/python bench/principal_cache.py --backend sqlite --rounds 1 --duration 3
    .venv/bin/python bench/principal_cache.py --plot-only   # redraw the PNG from the JSON

Writes ``results/principal_cache.json`` and ``results/principal_cache.png`` (grouped
bars: median requests/s with the cache off and on, per backend and credential, the
ratio above each pair and every round's value as a dot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from common import RESULTS_DIR, VaultServer, machine_info, new_figure, save_figure, write_json
from listing import PG_URL, bench_databases

NAME = "principal_cache"
BACKENDS = ("sqlite", "postgres")
CREDENTIALS = ("api_token", "jwt")
ME = "/api/v1/auth/me"
USER = {"username": "bench.clinician", "email": "bench@example.org", "role": "clinician"}
PASSWORD = "bench-password-long-enough"  # noqa: S105  (a throw-away benchmark account)


@contextlib.contextmanager
def vault(backend: str, cache_seconds: int, workers: int) -> Iterator[VaultServer]:
    env = {
        "MEDVAULT_PRINCIPAL_CACHE_SECONDS": str(cache_seconds),
        "MEDVAULT_EMBEDDED_WORKER": "false",
        "MEDVAULT_SERVER_WORKERS": str(workers),
    }
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            dbs = stack.enter_context(bench_databases())
            env["MEDVAULT_DATABASE_URL"] = PG_URL.format(db=dbs["clinical"])
            env["MEDVAULT_AUTH_DATABASE_URL"] = PG_URL.format(db=dbs["auth"])
        yield stack.enter_context(VaultServer(extra_env=env))


def jwt_for(server: VaultServer) -> str:
    """A clinician's access token, logged in through the API like any client."""
    with server.client(timeout=30.0) as client:
        created = client.post("/api/v1/users", json={**USER, "password": PASSWORD})
        created.raise_for_status()
        login = client.post(
            "/api/v1/auth/token",
            data={"username": USER["username"], "password": PASSWORD},
            headers={"Authorization": ""},
        )
        login.raise_for_status()
        token: str = login.json()["access_token"]
        return token


def wrk(url: str, token: str, *, duration: float, connections: int) -> dict[str, float]:
    """wrk's requests/s and its mean/max latency (its own summary: enough for a ratio)."""
    proc = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "--latency"),
            *("-H", f"Authorization: Bearer {token}", url),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stdout}{proc.stderr}")
    out = proc.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    rps = float(found.group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p50_ms = float(p50.group(1)) * scale[p50.group(2)] if p50 else -1.0
    return {"requests_per_s": rps, "p50_ms": p50_ms}


def run_one(backend: str, cache_seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    with vault(backend, cache_seconds, args.workers) as server:
        tokens = {"api_token": server.token, "jwt": jwt_for(server)}
        result: dict[str, Any] = {}
        for kind in CREDENTIALS:
            with httpx.Client(base_url=server.base_url) as client:  # warm-up, checked
                for _ in range(50):
                    client.get(ME, headers={"Authorization": f"Bearer {tokens[kind]}"})
                assert client.get(
                    ME, headers={"Authorization": f"Bearer {tokens[kind]}"}
                ).is_success
            result[kind] = wrk(
                server.base_url + ME,
                tokens[kind],
                duration=args.duration,
                connections=args.connections,
            )
        return result


def plot(data: Mapping[str, Any], name: str) -> Path:
    """Grouped bars of the median requests/s, cache off against on, from the JSON's data."""
    summary: list[dict[str, Any]] = data["summary"]
    runs: list[dict[str, Any]] = data["runs"]
    fig, ax = new_figure(1, width=7.5, height=4.4)
    width = 0.38
    colors = {"off": "#7f7f7f", "on": "#1f77b4"}
    top = 0.0
    for x, row in enumerate(summary):
        group_top = 0.0
        for offset, label in ((-width / 2, "off"), (width / 2, "on")):
            ax.bar(x + offset, row[label], width, color=colors[label],
                   label=f"cache {label}" if x == 0 else None)  # fmt: skip
            rounds = [r[row["credential"]]["requests_per_s"] for r in runs
                      if r["backend"] == row["backend"] and r["cache"] == label]  # fmt: skip
            ax.scatter([x + offset] * len(rounds), rounds, s=10, color="black", zorder=3,
                       label="one round" if x == 0 and label == "off" else None)  # fmt: skip
            group_top = max(group_top, row[label], *rounds)
        top = max(top, group_top)
        ax.annotate(f"x{row['ratio']:.2f}", (x, group_top),
                    xytext=(0, 4), textcoords="offset points", ha="center",
                    fontsize=9, fontweight="bold")  # fmt: skip
    ax.set_xticks(range(len(summary)),
                  [f"{row['backend']}\n{row['credential']}" for row in summary])  # fmt: skip
    ax.set_ylim(0, top * 1.2)
    ax.set_ylabel("requests/s (median over rounds)")
    args = data.get("args", {})
    ax.set_title(f"GET {ME} by wrk, {args.get('connections', '?')} connections, "
                 f"{args.get('workers', '?')} process(es): ratio on/off", fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="medvault serve processes")
    parser.add_argument("--cache-seconds", type=int, default=5)
    parser.add_argument("--name", default=NAME)
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="Only redraw results/<name>.png from the existing results/<name>.json",
    )
    args = parser.parse_args()
    if args.plot_only:
        data = json.loads((RESULTS_DIR / f"{args.name}.json").read_text())
        print(f"wrote {plot(data, args.name)}")
        return 0
    settings = {"off": 0, "on": args.cache_seconds}
    runs: list[dict[str, Any]] = []
    for backend in args.backend or BACKENDS:
        for round_no in range(args.rounds):
            order = ["off", "on"] if round_no % 2 == 0 else ["on", "off"]
            for label in order:
                result = run_one(backend, settings[label], args)
                runs.append({"backend": backend, "round": round_no, "cache": label, **result})
                print(backend, round_no, label, result, flush=True)
    summary: list[dict[str, Any]] = []
    for backend in args.backend or BACKENDS:
        for kind in CREDENTIALS:
            med = {
                label: statistics.median(
                    r[kind]["requests_per_s"]
                    for r in runs
                    if r["backend"] == backend and r["cache"] == label
                )
                for label in settings
            }
            row = {"backend": backend, "credential": kind, **med, "ratio": med["on"] / med["off"]}
            summary.append(row)
    print(f"\n{'backend':10} {'credential':10} {'off req/s':>10} {'on req/s':>10} {'ratio':>6}")
    for row in summary:
        print(
            f"{row['backend']:10} {row['credential']:10} {row['off']:10.0f} "
            f"{row['on']:10.0f} {row['ratio']:6.2f}"
        )
    data = {"machine": machine_info(), "args": vars(args), "runs": runs, "summary": summary}
    json_path = write_json(args.name, data)
    png_path = plot(data, args.name)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
