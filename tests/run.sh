#!/usr/bin/env bash
# The test command: installs what it needs (examples/setup_venv.sh), then runs the whole suite on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
