"""Sampling with CP heads or a PTP draft stays lossless: generated tokens follow the target's own distribution.

Reference: the exact joint distribution of the first three generated tokens under the target (transformers, float32,
temperature 1, top-k 8). x1 comes from the prefill; x2 and x3 are decided by vLLM's rejection sampler on our drafts.
Each chi-square test has a false-alarm rate of 1e-3 (two tests: <= 0.2% for the file), and the engine is seeded.
"""
import pytest
import torch
from stats import chi_square_p_value
from vllm_runs import generate

pytestmark = pytest.mark.engine

PROMPT = "def decode(self, s):"
TOP_K = 8
SAMPLES = 3000
ALPHA = 1e-3


def exact_joint(target) -> dict[tuple[int, int, int], float]:
    """p[(x1, x2, x3)] after PROMPT for every x_i among the top-k candidates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    prompt = AutoTokenizer.from_pretrained(target)(PROMPT)["input_ids"]

    def processed(logits):
        top = logits.topk(TOP_K, dim=-1)
        return top.indices, top.values.softmax(-1)

    joint = {}
    with torch.no_grad():
        ids1, p1 = processed(model(torch.tensor([prompt])).logits[0, -1])
        for a, pa in zip(ids1.tolist(), p1.tolist()):
            ids2, p2 = processed(model(torch.tensor([prompt + [a]])).logits[0, -1])
            seqs = torch.tensor([prompt + [a, b] for b in ids2.tolist()])
            logits3 = model(seqs).logits[:, -1]
            for b, pb, row in zip(ids2.tolist(), p2.tolist(), logits3):
                ids3, p3 = processed(row)
                for c, pc in zip(ids3.tolist(), p3.tolist()):
                    joint[(a, b, c)] = pa * pb * pc
    return joint


def marginal(joint, positions):
    out = {}
    for key, p in joint.items():
        sub = tuple(key[i] for i in positions)
        out[sub] = out.get(sub, 0.0) + p
    return out


def p_value(samples, reference):
    keys = list(reference)
    index = {k: i for i, k in enumerate(keys)}
    observed = torch.zeros(len(keys) + 1)
    for s in samples:
        observed[index.get(s, len(keys))] += 1
    expected = torch.tensor([reference[k] for k in keys] + [0.0])
    return chi_square_p_value(observed, expected)


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_sampled_tokens_follow_the_target_distribution_in_a_mixed_batch(tiny_target, draft, request):
    from vllm import SamplingParams
    draft = request.getfixturevalue(draft)
    sampled = SamplingParams(temperature=1.0, top_k=TOP_K, max_tokens=3, ignore_eos=True)
    greedy = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    prompts = [PROMPT] * SAMPLES + ["import json", "class Decoder:"] * 8
    params = [sampled] * SAMPLES + [greedy] * 16
    spec = generate(tiny_target, prompts, params, {"model": str(draft), "num_speculative_tokens": 3})
    plain = generate(tiny_target, prompts[SAMPLES:], params[SAMPLES:])
    assert spec.outputs[SAMPLES:] == plain.outputs, "greedy requests changed in a batch with sampled ones"
    assert spec.accepted > 0

    joint = exact_joint(tiny_target)
    first_two = [tuple(o[:2]) for o in spec.outputs[:SAMPLES]]
    last_two = [tuple(o[1:3]) for o in spec.outputs[:SAMPLES]]
    assert p_value(first_two, marginal(joint, (0, 1))) > ALPHA
    assert p_value(last_two, marginal(joint, (1, 2))) > ALPHA
