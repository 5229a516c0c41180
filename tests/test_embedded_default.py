"""The shipped drafts on the real embedded default (SmolLM2-135M-Instruct): greedy output is plain vLLM's."""
import pytest

from vllm_ptp.bench.demo import SHIPPED
from vllm_runs import generate


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


@pytest.fixture(scope="module")
def plain(smollm2, chat_prompts):
    return generate(smollm2, chat_prompts, greedy(), max_model_len=2048)


@pytest.mark.parametrize("draft", ["cp_smollm2_r8", "cp_smollm2_r1"])
def test_shipped_heads_greedy_identical_on_smollm2(smollm2, chat_prompts, plain, draft):
    spec = generate(smollm2, chat_prompts, greedy(), {"model": str(SHIPPED / draft)}, max_model_len=2048)
    assert len(chat_prompts) == 16
    assert spec.outputs == plain.outputs
    # A wiring check, not a speed target (that is the benchmark): random heads stay at 1.0.
    assert spec.acceptance_length > 1.15, "the shipped heads are (almost) never accepted: miswired?"


@pytest.mark.parametrize("k", [1, 3, 4])
def test_shipped_ptp_draft_greedy_identical_on_smollm2(smollm2, chat_prompts, plain, k):
    spec = generate(smollm2, chat_prompts, greedy(), {"model": str(SHIPPED / "ptp_smollm2"),
                                                      "num_speculative_tokens": k}, max_model_len=2048)
    assert spec.outputs == plain.outputs
    assert spec.draft_tokens == spec.drafts * k
    assert spec.acceptance_length > 1.15, "the shipped PTP draft is (almost) never accepted: miswired?"
