#!/usr/bin/env bash
# Installs everything the test suite needs, starts what it needs, and runs it:
# ruff (lint + format), mypy, import-linter, then pytest on SQLite+filesystem and PostgreSQL+S3.
# Safe to run repeatedly; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

echo "==> Debian packages"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends \
    python3-venv postgresql postgresql-client redis-server ca-certificates nginx \
    clamav-daemon tesseract-ocr tesseract-ocr-eng >/dev/null
# clamav-daemon: tests/processing starts its own clamd on a free port with a signature
# database it builds (freshclam cannot download signatures here); the package's own
# service is not used.
# nginx: tests/ops/test_nginx.py runs deploy/nginx/medvault.conf in front of a vault (own
# config, port and pid file; the package's default site is not used).
# Browser tests (tests/web) drive Debian's Chromium through Playwright: no `playwright install`,
# since only package registries are reachable. Fonts keep screenshots legible and stable.
as_root apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core fonts-liberation >/dev/null

echo "==> PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    cluster_version=$(ls /etc/postgresql | sort -V | tail -n 1)
    as_root pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
# The tests connect as postgres over TCP; a stock Debian cluster wants a password there.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1; then
    as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
    export MEDVAULT_TEST_PG_URL="postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
    export PGPASSWORD=postgres
fi

echo "==> Redis"
# The rate-limit tests share counters through Redis, as several instances do.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/medvault-tests.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

echo "==> Python environment"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,bench]"  # bench: mypy checks bench/ too

echo "==> Azurite (npm)"
# tests/storage runs the Azure blob store against Azurite, Microsoft's Azure Storage
# emulator (tests/support/azurite.py starts it), installed from npm into .cache/
# (git-ignored). 3.35.0 is the newest release whose engines allow Debian's Node 18 and
# Node 20 (3.36 wants Node 21+). Reinstalled only when the pinned version changes.
AZURITE_VERSION=3.35.0
if ! command -v npm >/dev/null 2>&1; then
    as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ "$(cat .cache/azurite/.version 2>/dev/null)" != "$AZURITE_VERSION" ]; then
    rm -rf .cache/azurite && mkdir -p .cache/azurite
    npm install --prefix .cache/azurite --no-audit --no-fund --no-save --loglevel=error \
        "azurite@$AZURITE_VERSION" >/dev/null
    echo "$AZURITE_VERSION" > .cache/azurite/.version
fi

echo "==> ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench

echo "==> mypy"
.venv/bin/mypy

echo "==> import-linter"
# The layer contracts in pyproject's [tool.importlinter] (see ARCHITECTURE.md, "Layers").
.venv/bin/lint-imports --no-cache

echo "==> pytest"
# One worker per core (pytest-xdist): every fixture makes its own databases, folders,
# ports and servers, so workers never share state. pytest-randomly shuffles the order
# and prints its seed in the header ("Using --randomly-seed=N"): pass that option to
# repeat an order. pytest exits 5 when it collects nothing; with `set -e` that fails
# the run too. --durations lists the 30 slowest tests at the end, so a CI log shows where
# the time goes when the run nears its 30-minute budget (2026-12-06: 21 to 24 minutes).
.venv/bin/python -m pytest -n "${MEDVAULT_TEST_WORKERS:-auto}" --durations=30 "$@"
