"""Greedy decoding with CP heads is token-for-token plain vLLM (target in float32)."""
import pytest
from tiny_models import stdlib_text
from vllm_runs import generate

pytestmark = pytest.mark.engine

PROMPTS = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20][:16]


@pytest.fixture(scope="module")
def plain_greedy(tiny_target):
    from vllm import SamplingParams
    return generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))


@pytest.mark.parametrize("heads, k", [("tiny_cp", 1), ("tiny_cp", 3), ("tiny_cp_rank1", 3)])
def test_greedy_output_identical_to_plain_vllm(request, tiny_target, plain_greedy, heads, k):
    from vllm import SamplingParams
    tiny_cp = request.getfixturevalue(heads)
    spec = generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                    {"model": str(tiny_cp), "num_speculative_tokens": k})
    assert len(PROMPTS) == 16
    assert spec.outputs == plain_greedy.outputs
    assert spec.drafts > 0 and spec.draft_tokens == spec.drafts * k
    assert spec.accepted > 0, "trained heads never got a draft accepted: the hidden state or token is miswired"


def test_method_detected_from_checkpoint_and_k_defaults_to_heads(tiny_target, tiny_cp, plain_greedy):
    from vllm import SamplingParams
    spec = generate(tiny_target, PROMPTS[:4], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                    {"model": str(tiny_cp)})
    assert spec.outputs == plain_greedy.outputs[:4]
    assert spec.draft_tokens == spec.drafts * 3
