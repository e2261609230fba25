#!/usr/bin/env bash
# The main job with embedded defaults: set up, then replay the fixture calls through the
# whole chain (VAD -> ASR -> router -> events). Extra arguments go to `fenliu demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fenliu demo "$@"
