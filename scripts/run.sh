#!/usr/bin/env bash
# The main job with embedded defaults (loopback SIP, local test hotlines): set up, then dial
# the fixture calls into the SIP workers as real calls, show the live transcript and decision,
# and press the one key for diversions. Extra arguments go to `fenliu demo --live`
# (e.g. --limit 3, --model PATH). The offline replay is `.venv/bin/fenliu demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fenliu demo --live "$@"
