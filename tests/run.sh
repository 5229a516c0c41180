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
# pytest from its entry point, not `python -m`: the repository root stays off sys.path, so the top-level kernels/
# folder is only ever imported as vllm_ptp.kernels.
exec "$root/.venv/bin/pytest" -q -p no:cacheprovider tests "$@"
