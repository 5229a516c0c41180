"""vLLM's dynamic speculative decoding (`num_speculative_tokens_per_batch_size`: k by batch size, down to 0) with our
drafts: while the batch shrinks, steps switch between no drafting and drafting, and greedy output stays plain vLLM's.
Sampled requests in the same batch are served too."""
import pytest
from tiny_models import stdlib_text
from vllm_runs import generate

pytestmark = pytest.mark.engine

PROMPTS = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20][:12]
# Staggered lengths: the batch shrinks from 12 to 1 requests, one at a time.
MAX_TOKENS = [8 + 4 * i for i in range(len(PROMPTS))]
K = 3
# k=3 for batches of 1 to 4 requests, none above: the second half of the run drafts, the first half does not.
SCHEDULE = [[1, 4, K], [5, 64, 0]]


def params(temperature: float):
    from vllm import SamplingParams
    return [SamplingParams(temperature=temperature, max_tokens=n, ignore_eos=True, seed=i)
            for i, n in enumerate(MAX_TOKENS)]


@pytest.fixture(scope="module")
def plain_greedy(tiny_target):
    return generate(tiny_target, PROMPTS, params(0.0))


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_k_by_batch_size_keeps_greedy_output(tiny_target, draft, plain_greedy, request):
    folder = request.getfixturevalue(draft)
    spec = {"model": str(folder), "num_speculative_tokens": K, "num_speculative_tokens_per_batch_size": SCHEDULE}
    run = generate(tiny_target, PROMPTS, params(0.0), spec)
    assert run.outputs == plain_greedy.outputs
    assert [len(o) for o in run.outputs] == MAX_TOKENS
    # Drafting steps happened only at batch <= 4: the last 4 requests' remaining tokens bound them.
    tail_tokens = sum(MAX_TOKENS[-4:]) - 4 * MAX_TOKENS[-5]
    assert 0 < run.drafts <= tail_tokens, "the schedule's k=0 steps drafted, or no step drafted"
    assert run.draft_tokens == run.drafts * K
    assert run.accepted > 0


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_k_by_batch_size_serves_sampled_requests(tiny_target, draft, request):
    folder = request.getfixturevalue(draft)
    spec = {"model": str(folder), "num_speculative_tokens": K, "num_speculative_tokens_per_batch_size": SCHEDULE}
    run = generate(tiny_target, PROMPTS, params(1.0), spec)
    assert [len(o) for o in run.outputs] == MAX_TOKENS
    assert run.drafts > 0
