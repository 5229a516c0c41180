"""Every bad draft checkpoint or setting is one clear error at start-up, naming the file and field."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm_ptp.models.checkpoint import CheckpointError
from vllm_ptp.vllm_seam import UnsupportedVLLMVersion, check_vllm_version


def start(target, speculative_config):
    from vllm import LLM
    return LLM(model=str(target), dtype="float32", enforce_eager=True, max_model_len=256,
               speculative_config=speculative_config)


def broken_copy(tiny_cp, tmp_path, edit):
    folder = tmp_path / "cp"
    shutil.copytree(tiny_cp, folder)
    edit(folder)
    return folder


def edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def test_missing_checkpoint(tiny_target, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        start(tiny_target, {"method": "cp", "model": str(tmp_path / "nowhere"), "num_speculative_tokens": 2})


def test_missing_config(tiny_target, tiny_cp, tmp_path):
    folder = broken_copy(tiny_cp, tmp_path, lambda f: (f / "config.json").unlink())
    with pytest.raises(CheckpointError, match=r"config.json: missing"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_unreadable_config(tiny_target, tiny_cp, tmp_path):
    folder = broken_copy(tiny_cp, tmp_path, lambda f: (f / "config.json").write_text("{not json"))
    with pytest.raises(CheckpointError, match=r"config.json: unreadable JSON"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_config_of_another_kind(tiny_target, tiny_cp, tmp_path):
    folder = broken_copy(tiny_cp, tmp_path, edit_config(speculators_model_type="eagle3"))
    with pytest.raises(CheckpointError, match=r"'speculators_model_type' is 'eagle3'"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_target_model_folder_given_as_draft(tiny_target):
    with pytest.raises(CheckpointError, match=r"'speculators_model_type' is None, expected 'cp'"):
        start(tiny_target, {"method": "cp", "model": str(tiny_target)})


def test_vocab_size_mismatch(tiny_target, tiny_cp, tmp_path):
    folder = broken_copy(tiny_cp, tmp_path, edit_config(vocab_size=999))
    with pytest.raises(CheckpointError, match=r"'vocab_size' is 999 but the target model's vocab size is 384"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_hidden_size_mismatch(tiny_target, tiny_cp, tmp_path):
    folder = broken_copy(tiny_cp, tmp_path, edit_config(hidden_size=64))
    with pytest.raises(CheckpointError, match=r"'hidden_size' is 64 but the target model's hidden size is 128"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_more_speculative_tokens_than_heads(tiny_target, tiny_cp):
    with pytest.raises(CheckpointError, match=r"num_speculative_tokens=5 but field 'num_heads' is 3"):
        start(tiny_target, {"method": "cp", "model": str(tiny_cp), "num_speculative_tokens": 5})


def test_pickle_weights_are_refused(tiny_target, tiny_cp, tmp_path):
    def to_pickle(folder):
        torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    folder = broken_copy(tiny_cp, tmp_path, to_pickle)
    with pytest.raises(CheckpointError, match=r"pickle weights \['pytorch_model.bin'\]"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_truncated_weights(tiny_target, tiny_cp, tmp_path):
    def truncate(folder):
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    folder = broken_copy(tiny_cp, tmp_path, truncate)
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_weights_that_do_not_match_config(tiny_target, tiny_cp, tmp_path):
    def drop_tensor(folder):
        weights = load_file(str(folder / "model.safetensors"))
        weights.pop("gate.weight")
        save_file(weights, str(folder / "model.safetensors"))
    folder = broken_copy(tiny_cp, tmp_path, drop_tensor)
    with pytest.raises(CheckpointError, match=r"missing \['gate.weight'\]"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_heads_trained_for_another_target(tiny_target, tiny_cp, tmp_path):
    fingerprint = json.loads((tiny_cp / "config.json").read_text())["speculators_config"]["verifier"]
    fingerprint["embedding_fingerprint"] = [x + 1.0 for x in fingerprint["embedding_fingerprint"]]

    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config["speculators_config"]["verifier"] = fingerprint
        (folder / "config.json").write_text(json.dumps(config))
    folder = broken_copy(tiny_cp, tmp_path, edit)
    with pytest.raises(Exception, match=r"embedding_fingerprint' does not match the target's embedding"):
        start(tiny_target, {"method": "cp", "model": str(folder)})


def test_ptp_is_reserved_with_a_clear_error(tiny_target, tiny_cp):
    with pytest.raises(CheckpointError, match=r"method 'ptp' is reserved"):
        start(tiny_target, {"method": "ptp", "model": str(tiny_cp)})


def test_unsupported_vllm_version():
    check_vllm_version("0.32.0")
    with pytest.raises(UnsupportedVLLMVersion, match=r"supports vLLM 0.32.0.*installed vLLM is 0.31.1"):
        check_vllm_version("0.31.1")


def test_unknown_method_still_rejected_by_vllm(tiny_target):
    with pytest.raises(Exception, match="Input should be"):
        start(tiny_target, {"method": "cpx", "model": "x", "num_speculative_tokens": 2})
