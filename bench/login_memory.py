"""Server memory during a burst of parallel anonymous logins (issue 9, defect 4).

Each argon2id verification takes 64 MiB. This starts ``medvault serve`` once per
bound on concurrent password checks, fires 24 parallel logins with unknown
usernames, and reports the RSS growth (peak minus before) and the answers. With a
bound of 24 (effectively none) the growth is what the attack review measured; with
the default of 4 it is bounded. Writes ``bench/results/login_memory.json``.

    .venv/bin/python bench/login_memory.py
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from common import MiB, RssSampler, VaultServer, machine_info, write_json

PARALLEL = 24
BOUNDS = (24, 4)


def burst(url: str) -> Counter[int]:
    barrier = threading.Barrier(PARALLEL)

    def one(n: int) -> int:
        with httpx.Client(base_url=url, timeout=120) as client:
            barrier.wait()
            return client.post(
                "/api/v1/auth/token",
                data={
                    "username": f"nobody-{n}",
                    "password": "wrong-password-x",
                    "grant_type": "password",
                },
            ).status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        return Counter(pool.map(one, range(PARALLEL)))


def run(bound: int) -> dict[str, Any]:
    env = {
        "MEDVAULT_MAX_CONCURRENT_PASSWORD_CHECKS": str(bound),
        "MEDVAULT_LOGIN_RATE_LIMIT_IP": "1000/minute",
    }
    with VaultServer(extra_env=env, name=f"bound-{bound}") as vault:
        burst(vault.base_url)  # warm up: the first burst's allocations are not the attack's
        with RssSampler(vault.pid, interval=0.01) as sampler, sampler.window() as window:
            statuses = burst(vault.base_url)
    return {
        "bound": bound,
        "rss_growth_mib": round(window.growth / MiB, 1),
        "statuses": dict(sorted(statuses.items())),
    }


def main() -> None:
    results = [run(bound) for bound in BOUNDS]
    for result in results:
        print(
            f"bound {result['bound']:>2}: RSS +{result['rss_growth_mib']} MiB, "
            f"answers {result['statuses']}"
        )
    write_json("login_memory", {"machine": machine_info(), "parallel": PARALLEL, "runs": results})


if __name__ == "__main__":
    main()
