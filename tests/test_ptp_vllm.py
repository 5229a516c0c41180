"""A PTP draft inside vLLM: greedy output is plain vLLM's, one draft forward per step, and vLLM's draft computes
exactly what the plain-torch model computes from the same safetensors."""
import pytest
import torch
from tiny_models import stdlib_text
from vllm_runs import draft_with_target_states, generate

from vllm_ptp.vllm_integration.methods import serves_ptp

pytestmark = pytest.mark.engine

PROMPTS = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20][:16]


@pytest.fixture(scope="module")
def plain_greedy(tiny_target):
    from vllm import SamplingParams
    return generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_greedy_output_identical_to_plain_vllm(tiny_target, tiny_ptp, plain_greedy, k):
    from vllm import SamplingParams
    spec = generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                    {"model": str(tiny_ptp), "num_speculative_tokens": k})  # method "ptp" detected from config.json
    assert len(PROMPTS) == 16
    assert spec.outputs == plain_greedy.outputs
    assert spec.drafts > 0 and spec.draft_tokens == spec.drafts * k
    assert spec.accepted > 0, "a trained draft never got a token accepted: inputs or slots are miswired"


class Recorder:
    """Counts draft forwards per propose() and records what vLLM's PTP proposer computed."""

    def __init__(self, monkeypatch):
        self.proposes, self.forwards, self.steps = 0, 0, []
        from vllm_ptp.vllm_integration.ptp_classes import PtpLlamaForCausalLM as model_cls, PTPProposer as proposer_cls
        forward, propose = model_cls.forward, proposer_cls.propose
        first_pass, sample = proposer_cls.set_inputs_first_pass, proposer_cls._sample_draft_tokens
        recorder = self

        def counting_forward(model, *args, **kwargs):
            recorder.forwards += 1
            return forward(model, *args, **kwargs)

        def counting_propose(proposer, *args, **kwargs):
            recorder.proposes += 1
            return propose(proposer, *args, **kwargs)

        def recording_first_pass(proposer, *args, **kwargs):
            out = first_pass(proposer, *args, **kwargs)
            rows = out[1].long()
            recorder.steps.append({"positions": proposer.positions[rows].clone(),
                                   "tokens": proposer.input_ids[rows].clone()})
            return out

        def recording_sample(proposer, hidden_states, sampling_metadata):
            ids, probs = sample(proposer, hidden_states, sampling_metadata)
            recorder.steps[-1].update(logits=proposer.model.compute_logits(hidden_states).float().clone(),
                                      u=proposer._ptp_u.clone(), ids=ids.clone())
            return ids, probs

        monkeypatch.setattr(model_cls, "forward", counting_forward)
        monkeypatch.setattr(proposer_cls, "propose", counting_propose)
        monkeypatch.setattr(proposer_cls, "set_inputs_first_pass", recording_first_pass)
        monkeypatch.setattr(proposer_cls, "_sample_draft_tokens", recording_sample)


def test_one_draft_forward_per_step_whatever_k(tiny_target, tiny_ptp, monkeypatch):
    from vllm import SamplingParams
    recorder = Recorder(monkeypatch)
    for k in (2, 4):
        recorder.proposes = recorder.forwards = 0
        generate(tiny_target, PROMPTS[:4], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
                 {"model": str(tiny_ptp), "num_speculative_tokens": k})
        assert recorder.proposes > 0
        assert recorder.forwards == recorder.proposes, f"k={k}: {recorder.forwards} forwards, {recorder.proposes} steps"


@pytest.mark.parametrize("draft_name", ["tiny_ptp", "tiny_ptp_two_layers"])
def test_vllm_draft_equals_plain_torch_draft(tiny_target, draft_name, request, monkeypatch):
    """Every step of a sampled request: vLLM's slot logits (paged KV, its own layers) = PTPDraft.propose_logits on
    the target's states from transformers, with the same u's and temperature; and the drafts are the picks."""
    from vllm import SamplingParams

    from vllm_ptp.kernels import pick_from_logits
    tiny_ptp = request.getfixturevalue(draft_name)
    recorder = Recorder(monkeypatch)
    k, temperature = 4, 0.8
    run = generate(tiny_target, PROMPTS[:1], SamplingParams(temperature=temperature, max_tokens=24, ignore_eos=True),
                   {"model": str(tiny_ptp), "num_speculative_tokens": k}, one_at_a_time=True)
    draft, sequence, aux = draft_with_target_states(tiny_target, tiny_ptp, PROMPTS[0], run.outputs[0])
    checked = 0
    for step in recorder.steps:
        p = int(step["positions"][0])  # the bonus slot: position of the last verified token
        if p + 2 > len(sequence) or "logits" not in step:
            continue
        assert int(step["tokens"][0]) == int(sequence[p + 1])
        with torch.no_grad():
            expected = draft.propose_logits(aux[:p + 1], sequence[1:p + 2], step["u"][0, :k - 1],
                                            torch.tensor(temperature), k)
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(step["logits"]))
        torch.testing.assert_close(step["logits"][finite], expected[finite], atol=2e-3, rtol=2e-3)
        picks, _ = pick_from_logits(step["logits"], torch.full((k,), temperature), None, None, step["u"][0])
        assert torch.equal(picks, step["ids"].cpu())
        checked += 1
    assert checked >= 3


def test_ptp_runs_as_eagle3_parallel_drafting_on_the_v1_runner(tiny_target, tiny_ptp):
    from vllm.engine.arg_utils import EngineArgs
    config = EngineArgs(model=str(tiny_target), dtype="float32", enforce_eager=True, max_model_len=256,
                        speculative_config={"model": str(tiny_ptp)}).create_engine_config()
    spec = config.speculative_config
    assert (spec.method, spec.parallel_drafting, spec.num_speculative_tokens) == ("eagle3", True, 4)
    assert serves_ptp(spec)
    assert "speculative method 'ptp' (vllm-ptp)" in config._get_v2_model_runner_unsupported_features()
    plain = EngineArgs(model=str(tiny_target), dtype="float32", enforce_eager=True,
                       max_model_len=256).create_engine_config()
    assert not serves_ptp(plain.speculative_config)
    assert not any("vllm-ptp" in f for f in plain._get_v2_model_runner_unsupported_features())
