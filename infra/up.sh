#!/usr/bin/env bash
# Sets up what is missing, then runs the whole local stack (arguments go to `elves up`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash infra/setup.sh
exec "$ROOT/.venv/bin/elves" up "$@"
