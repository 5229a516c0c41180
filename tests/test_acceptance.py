"""The offline acceptance evaluator: its batched anchors are the reference one-step draft of every anchor, greedy
chains are products of matches, and at T > 0 its estimate is vLLM's rejection rule in expectation."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from vllm_ptp.kernels import pick_from_logits
from vllm_ptp.models.ptp_draft import load_ptp_draft
from vllm_ptp.training.acceptance import GREEDY_U, TeacherSequence, anchor_chains, sequence_acceptance

K = 4


@pytest.fixture(scope="module")
def target_and_draft(tiny_target, tiny_ptp):
    model = AutoModelForCausalLM.from_pretrained(tiny_target, dtype=torch.float32).eval()
    draft = load_ptp_draft(tiny_ptp)
    draft.embed = model.get_input_embeddings().weight.detach()
    return model, draft


def states(model, draft, tokens: torch.Tensor):
    with torch.no_grad():
        out = model.model(tokens[None], output_hidden_states=True)
    aux = torch.stack([out.hidden_states[i][0] for i in draft.config.aux_layer_ids], dim=1)
    return aux, out.last_hidden_state[0]


def continuation(model, prompt: torch.Tensor, n: int, temperature: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(prompt[None], max_new_tokens=n, do_sample=temperature > 0, min_new_tokens=n,
                             temperature=temperature if temperature > 0 else None, top_k=0, top_p=None)
    return out[0]


def prompt_ids(i: int) -> torch.Tensor:
    return torch.arange(5 + i, 25 + 2 * i) % 300 + 3


def test_greedy_chain_is_the_reference_draft_at_every_anchor(target_and_draft):
    model, draft = target_and_draft
    lm_head = model.get_output_embeddings().weight.detach()
    for i in range(3):
        P = len(prompt_ids(i))
        tokens = continuation(model, prompt_ids(i), 24, 0.0, 0)
        aux, final = states(model, draft, tokens)
        got = sequence_acceptance(draft, TeacherSequence(tokens, P, 0.0, aux, final), lm_head, K)
        chain, anchors = torch.zeros(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
        for t in range(P - 1, len(tokens) - 2):
            # one draft step at anchor t, as vLLM runs it (draft.propose_logits is its plain-torch reference)
            logits = draft.propose_logits(aux[:t + 1].flatten(1), tokens[1:t + 2], torch.full((K - 1,), GREEDY_U),
                                          torch.tensor(0.0), K)
            matched = True
            for j in range(1, K + 1):
                if t + 1 + j > len(tokens) - 1:
                    break
                matched = matched and int(logits[j - 1].argmax()) == int(tokens[t + 1 + j])
                chain[j - 1] += matched
                anchors[j - 1] += 1
        assert torch.equal(got.anchors, anchors)
        assert torch.equal(got.chain, chain), (got.chain, chain)


def test_sampled_estimate_is_vllms_rejection_rule_in_expectation(target_and_draft):
    """At T = 1 from one context: vLLM's rule simulated directly (u ~ U, d_j = pick(u_j, q_j), the target's p at the
    drafted prefix, accept with min(1, p/q) in order) against the evaluator's estimate from the target's own
    continuations of that context."""
    model, draft = target_and_draft
    lm_head = model.get_output_embeddings().weight.detach()
    prompt = prompt_ids(1)
    P, n = len(prompt), 2000
    aux, _ = states(model, draft, prompt)
    g = torch.Generator().manual_seed(0)
    d2t = draft.draft_to_target()
    truth = torch.zeros(K, dtype=torch.float64)
    # the bonus token: the target's sample after the prompt; then draft K tokens at anchor P - 1 ... exactly as served
    bonus = int(continuation(model, prompt, 1, 1.0, 1)[-1])
    context = torch.cat([prompt, torch.tensor([bonus])])
    aux_ctx, _ = states(model, draft, context)
    u = torch.rand(n, K, generator=g)
    for i in range(n):
        logits = draft.propose_logits(aux_ctx[:P].flatten(1), context[1:P + 1], u[i, :K - 1], torch.tensor(1.0),
                                      K)[:, d2t]
        drafted, q_of = pick_from_logits(logits, torch.ones(K), None, None, u[i])
        drafted = d2t[drafted]
        with torch.no_grad():
            p = model(torch.cat([context, drafted])[None]).logits[0, P:P + K].softmax(-1)
        ratio = (p[torch.arange(K), drafted] / q_of).clamp(max=1)
        truth += ratio.double().cumprod(0)
    truth /= n
    estimate = torch.zeros(K, dtype=torch.float64)
    for i in range(n // 4):
        tokens = continuation(model, context, K, 1.0, 100 + i)
        a, f = states(model, draft, tokens)
        chain, exists, anchors, _ = anchor_chains(draft, TeacherSequence(tokens, P, 1.0, a, f), lm_head, K)
        assert int(anchors[0]) == P - 1 and bool(exists[0].all())  # the anchor whose bonus token is z_P
        estimate += chain[0]
    estimate /= n // 4
    assert truth[0] > 0.05, "the tiny draft is never accepted: the comparison would be vacuous"
    assert torch.allclose(estimate[:2], truth[:2], atol=0.06), (estimate, truth)


def test_min_draft_confidence_scores_the_rows_the_served_draft_would_verify(target_and_draft):
    """Each anchor's row stops at its first position whose chained top probability (softmax of the reference draft
    step, at T = 1 for greedy) is below C; verified and accepted positions are counted over the kept prefix."""
    model, draft = target_and_draft
    lm_head = model.get_output_embeddings().weight.detach()
    P = len(prompt_ids(0))
    tokens = continuation(model, prompt_ids(0), 24, 0.0, 0)
    aux, final = states(model, draft, tokens)
    thresholds = (1e-30, 0.02, 0.1, 1.5)
    got = sequence_acceptance(draft, TeacherSequence(tokens, P, 0.0, aux, final), lm_head, K, thresholds)
    expected = {c: [0.0, 0.0] for c in thresholds}
    for t in range(P - 1, len(tokens) - 2):
        logits = draft.propose_logits(aux[:t + 1].flatten(1), tokens[1:t + 2], torch.full((K - 1,), GREEDY_U),
                                      torch.tensor(0.0), K)
        chained = logits.softmax(-1).amax(-1).double().cumprod(0)
        later = torch.cat([tokens, tokens.new_full((K,), -1)])[t + 2:t + 2 + K]  # -1 past the end
        matched = (logits.argmax(-1) == later).double().cumprod(0)
        exists = torch.arange(1, K + 1) + t + 1 <= len(tokens) - 1
        for c in thresholds:
            kept = (chained >= c) & exists
            expected[c][0] += float(kept.sum())
            expected[c][1] += float((matched * kept).sum())
    for c in thresholds:
        assert got.cuts[c] == pytest.approx(expected[c], abs=1e-6)
    assert got.cuts[1e-30][0] == float(got.anchors.sum()) and got.cuts[1.5] == [0.0, 0.0]
    assert got.cuts[0.02][0] > got.cuts[0.1][0]
