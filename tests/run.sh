#!/usr/bin/env bash
# The test command: installs what it needs (examples/setup_venv.sh), then runs the whole suite on the CPU.
# --fast: only the tests without a vLLM engine, server, GPU or minutes-long setup (the inner loop; CI runs all).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
if [[ "${1:-}" == "--fast" ]]; then
  shift
  set -- -m "not engine and not server and not slow and not gpu" "$@"
fi
exec "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
