#!/usr/bin/env bash
# Install medvault into .venv and start it on the embedded default: SQLite databases
# and an encrypted blob folder under ./medvault-data, no other server needed.
# Arguments go to `medvault serve` (e.g. --port 9000); settings are MEDVAULT_* variables
# (see README.md, "Configuration").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x .venv/bin/python ]; then
    # Debian's python3 has the venv module but not ensurepip; python3-venv adds it.
    if ! python3 -m venv .venv; then
        rm -rf .venv  # the half-made one from the failed attempt
        echo "python3 -m venv is unavailable; installing python3-venv with apt-get" >&2
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        python3 -m venv .venv
    fi
fi

# Install only when needed: a first run, or pyproject.toml changed since the last install.
# An editable install picks up source edits by itself, so every other start skips pip
# (which otherwise costs about 11 s a start).
stamp=.venv/.medvault-installed
if [ ! -x .venv/bin/medvault ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q -e .
    touch "$stamp"
fi

exec .venv/bin/medvault serve "$@"
