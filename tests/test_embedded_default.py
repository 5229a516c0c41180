"""The shipped drafts on the real embedded default (SmolLM2-135M-Instruct): greedy output is plain vLLM's."""
import pytest

from vllm_ptp.bench.demo import SHIPPED
from vllm_runs import generate

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    from vllm_ptp.embedded import default_target_dir
    return default_target_dir()


@pytest.fixture(scope="module")
def chat_prompts(smollm2):
    from vllm_ptp.bench.compare import prompt_set
    return prompt_set(str(smollm2), "sharegpt", 16)


def greedy(max_tokens=32):
    from vllm import SamplingParams
    return SamplingParams(temperature=0, max_tokens=max_tokens)


TOKENS, EXTRA = 32, 4  # the teacher continues EXTRA tokens past the requests' end: vLLM verifies drafts past it


@pytest.fixture(scope="module")
def teacher(smollm2, chat_prompts):
    return generate(smollm2, chat_prompts, greedy(TOKENS + EXTRA), max_model_len=2048)


@pytest.fixture(scope="module")
def plain(teacher):
    return [o[:TOKENS] for o in teacher.outputs]


@pytest.mark.parametrize("draft", ["cp_smollm2_r8", "cp_smollm2_r1"])
def test_shipped_heads_greedy_identical_on_smollm2(smollm2, chat_prompts, plain, draft):
    spec = generate(smollm2, chat_prompts, greedy(), {"model": str(SHIPPED / draft)}, max_model_len=2048)
    assert len(chat_prompts) == 16
    assert spec.outputs == plain
    # A wiring check, not a speed target (that is the benchmark): random heads stay at 1.0.
    assert spec.acceptance_length > 1.15, "the shipped heads are (almost) never accepted: miswired?"


@pytest.mark.parametrize("k", [1, 3, 4])
def test_shipped_ptp_draft_greedy_identical_on_smollm2(smollm2, chat_prompts, plain, k):
    spec = generate(smollm2, chat_prompts, greedy(), {"model": str(SHIPPED / "ptp_smollm2"),
                                                      "num_speculative_tokens": k}, max_model_len=2048)
    assert spec.outputs == plain
    assert spec.draft_tokens == spec.drafts * k
    assert spec.acceptance_length > 1.15, "the shipped PTP draft is (almost) never accepted: miswired?"


def test_offline_acceptance_matches_vllm(smollm2, chat_prompts, teacher):
    """The offline evaluator (vllm_ptp.training.acceptance) on the target's greedy continuations gives the
    per-position acceptance vLLM reports for the same requests with the shipped PTP draft."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vllm_ptp.models.ptp_draft import load_ptp_draft
    from vllm_ptp.training.acceptance import TeacherSequence, draft_acceptance
    k = 4
    spec = generate(smollm2, chat_prompts, greedy(TOKENS), {"model": str(SHIPPED / "ptp_smollm2"),
                                                            "num_speculative_tokens": k}, max_model_len=2048)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    draft = load_ptp_draft(SHIPPED / "ptp_smollm2")
    draft.embed = model.get_input_embeddings().weight.detach()
    sequences = []
    for prompt, output in zip(chat_prompts, teacher.outputs):
        prompt_ids = tokenizer(prompt)["input_ids"]
        tokens = torch.tensor(prompt_ids + list(output))
        with torch.no_grad():
            out = model.model(tokens[None], output_hidden_states=True)
        aux = torch.stack([out.hidden_states[i][0] for i in draft.config.aux_layer_ids], dim=1)
        sequences.append(TeacherSequence(tokens, len(prompt_ids), 0.0, aux, out.last_hidden_state[0],
                                         served_tokens=TOKENS))
    offline = draft_acceptance(draft, sequences, model.get_output_embeddings().weight.detach(), k)["T=0"]
    print(f"offline {offline.greedy_steps} ({offline.steps} steps), vLLM {spec.acceptance_per_position} "
          f"({spec.drafts} drafts)")
    assert abs(offline.steps - spec.drafts) <= 0.05 * spec.drafts, (offline.steps, spec.drafts)
    for position, (ours, vllms) in enumerate(zip(offline.greedy_steps, spec.acceptance_per_position), 1):
        assert abs(ours - vllms) <= 0.05, (position, offline.greedy_steps, spec.acceptance_per_position)
    assert offline.greedy_steps[0] > 0.1, "the shipped draft is never accepted offline: the evaluator is miswired"
