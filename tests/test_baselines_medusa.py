"""Medusa heads trained by `train_medusa`, served by vLLM's own `method: medusa`: greedy output is plain vLLM's, and
vLLM drafts exactly what the plain-torch heads draft from the same folder."""
import json
import shutil

import pytest
import torch
from tiny_models import stdlib_text
from vllm_runs import generate

from vllm_ptp.models.checkpoint import CheckpointError
from vllm_ptp.models.medusa_heads import load_medusa_heads

pytestmark = pytest.mark.engine

PROMPTS = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20][:12]
HEADS = 3


@pytest.fixture(scope="module")
def tiny_medusa(tiny_target, tmp_path_factory):
    """3 heads distilled from the tiny target (training softmax over 256 of its 384 tokens)."""
    from vllm_ptp.training.ptp_data import TeacherSettings, generate_ptp_teacher_data
    from vllm_ptp.training.train_medusa import MedusaTrainArgs, train_medusa
    work = tmp_path_factory.mktemp("tiny_medusa")
    prompts = [[{"role": "user", "content": line}] for line in stdlib_text(60_000).splitlines()[:2400:12]]
    settings = TeacherSettings(target=str(tiny_target), aux_layers=[0, 1], max_new_tokens=48, state_dtype="float32")
    generate_ptp_teacher_data(settings, prompts, work / "teacher")
    return train_medusa(MedusaTrainArgs(target=str(tiny_target), data_dir=str(work / "teacher"),
                                        out=str(work / "medusa"), heads=HEADS, steps=300, batch_size=64, lr=3e-3,
                                        draft_vocab_size=256, save_every=100, eval_fraction=0.1))


def test_folder_holds_one_safetensors_file_in_vllm_layout(tiny_medusa):
    assert sorted(p.name for p in tiny_medusa.glob("*.safetensors")) == ["model.safetensors"]
    config = json.loads((tiny_medusa / "config.json").read_text())
    assert (config["model_type"], config["num_heads"], config["truncated_vocab_size"]) == ("medusa", HEADS, 384)
    names = set(load_medusa_heads(tiny_medusa).state_dict())
    blocks = {f"blocks.{i}.layers.0.{w}" for i in range(HEADS) for w in ("weight", "bias")}
    assert names == {"lm_heads.0.weight"} | blocks


def test_resumed_run_ships_the_same_heads(tiny_target, tiny_medusa, tmp_path):
    from safetensors.torch import load_file

    from vllm_ptp.training.train_medusa import MedusaTrainArgs, train_medusa
    copy = tmp_path / "medusa"
    shutil.copytree(tiny_medusa, copy)
    (copy / "model.safetensors").unlink()
    train_medusa(MedusaTrainArgs(target=str(tiny_target), data_dir=str(tiny_medusa.parent / "teacher"), out=str(copy),
                                 heads=HEADS, steps=300, batch_size=64, lr=3e-3, draft_vocab_size=256, save_every=100,
                                 eval_fraction=0.1))
    shipped, resumed = load_file(str(tiny_medusa / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert shipped.keys() == resumed.keys()
    assert all(torch.equal(shipped[k], resumed[k]) for k in shipped)


def test_vllm_greedy_output_identical_and_drafts_are_ours(tiny_target, tiny_medusa, monkeypatch):
    from vllm import SamplingParams
    from vllm.v1.spec_decode.medusa import MedusaProposer
    calls = []
    propose = MedusaProposer.propose

    def recording_propose(self, num_speculative_tokens, target_hidden_states, *args, **kwargs):
        drafts = propose(self, num_speculative_tokens, target_hidden_states, *args, **kwargs)
        calls.append((target_hidden_states.float().clone(), drafts.clone()))
        return drafts

    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    plain = generate(tiny_target, PROMPTS, params)
    monkeypatch.setattr(MedusaProposer, "propose", recording_propose)
    spec = generate(tiny_target, PROMPTS, params,
                    {"method": "medusa", "model": str(tiny_medusa), "num_speculative_tokens": HEADS})
    assert spec.outputs == plain.outputs
    assert spec.drafts > 0 and spec.draft_tokens == spec.drafts * HEADS
    assert spec.accepted > 0, "trained heads never got a token accepted: hidden state or head offset miswired"

    heads = load_medusa_heads(tiny_medusa).float()
    hidden = torch.cat([h for h, _ in calls])
    vllm_drafts = torch.cat([d for _, d in calls])
    assert torch.equal(heads.draft(hidden), vllm_drafts)


def test_vllm_detects_medusa_and_defaults_k_from_config(tiny_target, tiny_medusa):
    from vllm import SamplingParams
    spec = generate(tiny_target, PROMPTS[:2], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                    {"model": str(tiny_medusa)})
    assert spec.drafts > 0 and spec.draft_tokens == spec.drafts * HEADS


@pytest.mark.parametrize("field,value", [("medusa_fc_bias", False), ("num_heads", "3"), ("model_type", "eagle"),
                                         ("truncated_vocab_size", 256), ("num_attention_heads", 9)])
def test_bad_config_is_one_error_naming_file_and_field(tiny_medusa, tmp_path, field, value):
    folder = tmp_path / "medusa"
    shutil.copytree(tiny_medusa, folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"{folder}/config.json: field '{field}'"):
        load_medusa_heads(folder)
