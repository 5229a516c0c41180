"""`vllm-ptp train KIND --device D`: the device is a parameter of one code path, not a branch. The same command a GPU
team runs with `--device cuda` runs here with `--device cpu` (and with cuda where a GPU is present), trains, and
writes a checkpoint that loads, for every kind of draft."""
import pytest
import torch

from vllm_ptp.cli import main

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]

KIND_OPTIONS = {
    "ptp": ["--slots", "3", "--window", "32", "--anchors", "8", "--batch-size", "4", "--save-every", "2"],
    "peagle": ["--slots", "3", "--window", "32", "--anchors", "8", "--batch-size", "4", "--save-every", "2"],
    "cp": ["--rank", "2", "--heads", "2", "--batch-size", "16"],
    "medusa": ["--heads", "2", "--batch-size", "16"],
}


def load(kind: str, folder):
    if kind == "cp":
        from vllm_ptp.models.cp_heads import load_cp_heads
        return load_cp_heads(folder)
    if kind == "medusa":
        from safetensors.torch import load_file
        return load_file(str(folder / "model.safetensors"))
    from vllm_ptp.models.ptp_draft import load_ptp_draft
    return load_ptp_draft(folder)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(KIND_OPTIONS))
def test_training_runs_on_the_device_it_is_given(tiny_target, tiny_ptp, kind, device, tmp_path):
    out = tmp_path / kind
    main(["train", kind, "--target", str(tiny_target), "--teacher-dir", str(tiny_ptp.parent / "teacher"),
          "--out", str(out), "--steps", "4", "--draft-vocab", "128", "--device", device, *KIND_OPTIONS[kind]])
    loaded = load(kind, out)
    tensors = loaded.values() if isinstance(loaded, dict) else loaded.state_dict().values()
    assert all(torch.isfinite(t.float()).all() for t in tensors)
    assert f"--device {device}" in (out / "README.md").read_text()
