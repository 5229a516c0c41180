"""Every bad draft checkpoint or setting is one clear error at start-up, naming the file and field."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm_ptp.models.checkpoint import CheckpointError
from vllm_ptp.vllm_integration.version import UnsupportedVLLMVersion, check_vllm_version

pytestmark = pytest.mark.engine


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
    with pytest.raises(CheckpointError, match=r"num_speculative_tokens=5 but field 'num_heads' is 3.*with "
                                              r"\"hybrid\": \"ngram\" or \"suffix\" a larger k is taken"):
        start(tiny_target, {"method": "cp", "model": str(tiny_cp), "num_speculative_tokens": 5})


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_pickle_weights_are_refused(tiny_target, draft, request, tmp_path):
    def to_pickle(folder):
        torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    folder = draft_copy(request.getfixturevalue(draft), tmp_path, to_pickle)
    with pytest.raises(CheckpointError, match=r"pickle weights \['pytorch_model.bin'\]"):
        start(tiny_target, {"model": str(folder)})


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


def test_cp_checkpoint_given_as_ptp(tiny_target, tiny_cp):
    with pytest.raises(CheckpointError, match=r"'speculators_model_type' is 'cp' but speculative_config.method is 'ptp'"):
        start(tiny_target, {"method": "ptp", "model": str(tiny_cp)})


def draft_copy(draft, tmp_path, edit):
    folder = tmp_path / "draft"
    shutil.copytree(draft, folder, ignore=shutil.ignore_patterns("training_state"))
    edit(folder)
    return folder


def edit_ptp_config(section, **changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        (config[section] if section else config).update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


@pytest.mark.parametrize("section, change, message", [
    ("transformer_layer_config", {"vocab_size": 999},
     r"'transformer_layer_config.vocab_size' is 999 but the target model's vocab size is 384"),
    (None, {"target_hidden_size": 64}, r"'target_hidden_size' is 64 but the target model's hidden size is 128"),
    (None, {"eagle_aux_hidden_state_layer_ids": [0, 7]}, r"is \[0, 7\] but the target has 2 layers"),
    ("ptp", {"u_embedding": "sawtooth"}, r"'ptp.u_embedding' is 'sawtooth'"),
])
def test_ptp_draft_for_another_target_or_malformed(tiny_target, tiny_ptp, tmp_path, section, change, message):
    folder = draft_copy(tiny_ptp, tmp_path, edit_ptp_config(section, **change))
    with pytest.raises(CheckpointError, match=message):
        start(tiny_target, {"model": str(folder)})


def test_ptp_more_speculative_tokens_than_slots(tiny_target, tiny_ptp):
    # only context matches (the hybrid mode) draft past the slots a PTP draft was trained for
    with pytest.raises(CheckpointError, match=r"num_speculative_tokens=5 but field 'ptp.num_slots' is 4.*with "
                                              r"\"hybrid\": \"ngram\" or \"suffix\" a larger k is taken"):
        start(tiny_target, {"model": str(tiny_ptp), "num_speculative_tokens": 5})


def test_ptp_draft_trained_for_another_target(tiny_target, tiny_ptp, tmp_path):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        verifier = config["speculators_config"]["verifier"]
        verifier["embedding_fingerprint"] = [x + 1.0 for x in verifier["embedding_fingerprint"]]
        (folder / "config.json").write_text(json.dumps(config))
    folder = draft_copy(tiny_ptp, tmp_path, edit)
    with pytest.raises(Exception, match=r"embedding_fingerprint' does not match the target's embedding"):
        start(tiny_target, {"model": str(folder)})


def test_unsupported_vllm_version():
    check_vllm_version("0.32.0")
    check_vllm_version("0.32.0+cpu")  # local build suffixes are the same release
    for version in ("0.31.1", "0.33.0", "0.32.1", "not-a-version"):
        with pytest.raises(UnsupportedVLLMVersion, match=rf"supports vLLM 0.32.0.*installed vLLM is {version}"):
            check_vllm_version(version)


def test_unknown_method_still_rejected_by_vllm(tiny_target):
    with pytest.raises(Exception, match="Input should be"):
        start(tiny_target, {"method": "cpx", "model": "x", "num_speculative_tokens": 2})
