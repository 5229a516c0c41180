"""Baselines in vLLM's own formats, trained by our pipeline: a P-EAGLE draft (speculators "peagle") and an EAGLE-3
draft ("eagle3"). vLLM sets them up from the draft folder alone (without vllm-ptp too), greedy output stays plain
vLLM's, drafts get accepted, and vLLM's sequential EAGLE-3 drafting computes what the plain-torch draft does."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import stdlib_text
from vllm_runs import draft_with_target_states, generate

from vllm_ptp.vllm_integration.methods import is_ours
from vllm_ptp.cli import main

pytestmark = pytest.mark.engine

PROMPTS = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20][:16]
TRAIN = ["--aux-layers", "0,1", "--slots", "4", "--steps", "200", "--batch-size", "8", "--window", "64", "--anchors",
         "16", "--lr", "3e-3", "--draft-vocab", "256"]


def train(kind, target, teacher, out):
    # one prompt: the shared teacher cache already holds its shard, so the CLI generates nothing and adds no data
    main(["train", kind, "--target", str(target), "--teacher-dir", str(teacher), "--data", "humaneval", "--prompts",
          "1", *TRAIN, "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def tiny_peagle(tiny_target, tiny_ptp, tmp_path_factory):
    return train("peagle", tiny_target, tiny_ptp.parent / "teacher", tmp_path_factory.mktemp("peagle") / "peagle")


@pytest.fixture(scope="module")
def tiny_eagle3(tiny_target, tiny_ptp, tmp_path_factory):
    return train("eagle3", tiny_target, tiny_ptp.parent / "teacher", tmp_path_factory.mktemp("eagle3") / "eagle3")


@pytest.fixture(scope="module")
def plain_greedy(tiny_target):
    from vllm import SamplingParams
    return generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))


def test_checkpoints_are_vllm_types_without_ptp_parts(tiny_target, tiny_peagle, tiny_eagle3):
    for folder, kind, parallel in ((tiny_peagle, "peagle", True), (tiny_eagle3, "eagle3", False)):
        config = json.loads((folder / "config.json").read_text())
        assert config["speculators_model_type"] == kind and "ptp" not in config
        assert config["norm_before_residual"] is False  # vLLM's eagle3 updater would default it to True
        assert config["speculators_config"]["verifier"]["name_or_path"] == str(tiny_target.resolve())
        names = set(load_file(str(folder / "model.safetensors")))
        assert not any(n.startswith("ptp_conditioning.") for n in names)
        assert ("mask_hidden" in names) == parallel and ("mask_token_id" in config) == parallel
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert all(b < a - 0.2 for a, b in zip(log[0]["eval_loss_per_slot"], log[-1]["eval_loss_per_slot"]))
        assert f"train {kind}" in (folder / "README.md").read_text()


@pytest.mark.parametrize("draft_name, parallel", [("tiny_peagle", True), ("tiny_eagle3", False)])
def test_vllm_sets_up_the_draft_folder_alone(tiny_target, draft_name, parallel, request):
    from vllm.engine.arg_utils import EngineArgs
    folder = request.getfixturevalue(draft_name)
    config = EngineArgs(model=str(folder), dtype="float32", enforce_eager=True,
                        max_model_len=256).create_engine_config()
    spec = config.speculative_config
    assert config.model_config.model == str(tiny_target.resolve())
    assert (spec.method, spec.parallel_drafting, spec.num_speculative_tokens) == ("eagle3", parallel, 4)
    assert not is_ours(spec)


def test_unmodified_vllm_sets_them_up(tiny_peagle, tiny_eagle3):
    """The same in a process where vllm-ptp is not loaded (VLLM_PLUGINS names no plugin)."""
    script = textwrap.dedent(f"""
        import sys
        from vllm.engine.arg_utils import EngineArgs
        for folder in {[str(tiny_peagle), str(tiny_eagle3)]!r}:
            spec = EngineArgs(model=folder, dtype="float32", enforce_eager=True,
                              max_model_len=256).create_engine_config().speculative_config
            print("RESULT", spec.method, spec.parallel_drafting, spec.num_speculative_tokens)
        print("RESULT", "vllm_ptp" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            env={**os.environ, "VLLM_PLUGINS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    results = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == ["RESULT eagle3 True 4", "RESULT eagle3 False 4", "RESULT False"], result.stdout[-3000:]


@pytest.mark.parametrize("draft_name", ["tiny_peagle", "tiny_eagle3"])
def test_greedy_output_identical_to_plain_vllm_and_drafts_accepted(draft_name, plain_greedy, request):
    from vllm import SamplingParams
    folder = request.getfixturevalue(draft_name)
    k = 3  # the folder says 4; the user's speculative_config overrides it
    spec = generate(folder, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                    {"num_speculative_tokens": k})
    assert spec.outputs == plain_greedy.outputs
    assert spec.drafts > 0 and spec.draft_tokens == spec.drafts * k
    assert spec.accepted > 0, "a trained draft never got a token accepted: inputs or slots are miswired"


def test_vllm_eagle3_drafting_equals_plain_torch(tiny_target, tiny_eagle3, monkeypatch):
    """Every step of a greedy request: vLLM's k sequential draft logits (paged KV, its own layers) are
    PTPDraft.propose_logits_sequential on the target's states from transformers."""
    from vllm import SamplingParams
    from vllm.v1.spec_decode.eagle import EagleProposer

    steps = []
    propose, first_pass, sample = (EagleProposer.propose, EagleProposer.set_inputs_first_pass,
                                   EagleProposer._sample_draft_tokens)

    def recording_propose(proposer, *args, **kwargs):
        steps.append({"logits": []})
        return propose(proposer, *args, **kwargs)

    def recording_first_pass(proposer, *args, **kwargs):
        out = first_pass(proposer, *args, **kwargs)
        rows = out[1].long()
        steps[-1].update(position=int(proposer.positions[rows][0]), token=int(proposer.input_ids[rows][0]))
        return out

    def recording_sample(proposer, hidden_states, sampling_metadata):
        steps[-1]["logits"].append(proposer.model.compute_logits(hidden_states)[0].float().clone())
        return sample(proposer, hidden_states, sampling_metadata)

    monkeypatch.setattr(EagleProposer, "propose", recording_propose)
    monkeypatch.setattr(EagleProposer, "set_inputs_first_pass", recording_first_pass)
    monkeypatch.setattr(EagleProposer, "_sample_draft_tokens", recording_sample)
    k = 3
    run = generate(tiny_eagle3, PROMPTS[:1], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
                   {"num_speculative_tokens": k})
    draft, sequence, aux = draft_with_target_states(tiny_target, tiny_eagle3, PROMPTS[0], run.outputs[0])
    checked = 0
    for step in steps:
        p = step["position"]  # the last verified token's position
        if p + 2 > len(sequence):
            continue
        assert step["token"] == int(sequence[p + 1]) and len(step["logits"]) == k  # k draft forwards per step
        with torch.no_grad():
            expected = draft.propose_logits_sequential(aux[:p + 1], sequence[1:p + 2], k)
        got = torch.stack(step["logits"])
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(got))
        torch.testing.assert_close(got[finite], expected[finite], atol=2e-3, rtol=2e-3)
        checked += 1
    assert checked >= 3
