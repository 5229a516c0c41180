"""The CP proposer draws each draft token from exactly the distribution it hands to the rejection sampler."""
import pytest
import torch
from stats import chi_square_p_value

from vllm_ptp.kernels import pick_from_probs, processed_probs
from vllm_ptp.models.checkpoint import save_checkpoint
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import CPHeads, joint_log_likelihood
from vllm_ptp.proposers.cp_proposer import CPProposer

V, H = 12, 16


def tiny_proposer(tmp_path, rank=3, heads=3, draft_vocab=None) -> CPProposer:
    """draft_vocab: the target ids the heads score (default: all V, in order)."""
    torch.manual_seed(0)
    draft_size = V if draft_vocab is None else len(draft_vocab)
    config = CPConfig(hidden_size=H, vocab_size=V, num_heads=heads, rank=rank, draft_vocab_size=draft_size,
                      adapter_dim=4)
    model = CPHeads(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        if draft_vocab is not None:
            model.draft_vocab.copy_(torch.tensor(draft_vocab))
    save_checkpoint(tmp_path, config.to_json(), model.state_dict(), "test")
    proposer = CPProposer(tmp_path)
    embed = torch.randn(V, H)
    proposer.heads.attach_target(embed, torch.randn(V, H))
    return proposer


def test_pick_follows_the_distribution():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(1, 10) * 2, -1)
    probs[0, 3] = 0.0
    probs /= probs.sum()
    n = 20000
    tokens = pick_from_probs(torch.rand(n), probs.expand(n, -1))
    assert not (tokens == 3).any(), "a zero-probability token was picked"
    assert chi_square_p_value(torch.bincount(tokens, minlength=10), probs[0]) > 1e-3


def test_pick_is_the_inverse_cdf_in_token_id_order():
    probs = torch.tensor([[0.25, 0.0, 0.5, 0.25]])
    u = torch.tensor([0.0, 0.2499, 0.25, 0.7499, 0.75, 0.9999])
    assert pick_from_probs(u, probs.expand(6, -1)).tolist() == [0, 0, 2, 2, 3, 3]


def test_processed_probs_top_k_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]] * 3))
    out = processed_probs(logits, torch.tensor([1.0, 1.0, 0.0]), torch.tensor([2, 4, 4]), torch.tensor([1.0, 0.6, 1.0]))
    assert torch.allclose(out[0], torch.tensor([0.0, 4 / 7, 0.0, 3 / 7]))
    assert torch.allclose(out[1], torch.tensor([0.0, 4 / 7, 0.0, 3 / 7]))  # smallest set reaching 0.6: {0.4, 0.3}
    assert out[2].tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("rank", [1, 3])  # rank 1 takes the independent heads' path
def test_draft_distribution_is_the_mixture_conditional(tmp_path, rank):
    proposer = tiny_proposer(tmp_path, rank=rank)
    hidden, last = torch.randn(1, H), torch.tensor([3])
    ids, probs = proposer.propose(hidden, last, 3, torch.tensor([0.8]), None, None, torch.rand(1, 3))
    log_w, logits = proposer.heads(hidden, last)
    comp = (logits / 0.8).softmax(-1)[0]  # [n, r, V]
    post = log_w[0].exp()
    for s in range(3):
        expected = (post[:, None] * comp[s]).sum(0)
        assert torch.allclose(probs[0, s], expected, atol=1e-5)
        post = post * comp[s, :, ids[0, s]]
        post = post / post.sum()


@pytest.mark.parametrize("rank", [1, 3])  # rank 1 takes the independent heads' path
def test_drafts_are_sampled_from_the_handed_out_distribution(tmp_path, rank):
    proposer = tiny_proposer(tmp_path, rank=rank)
    n = 20000
    hidden = torch.randn(1, H).expand(n, -1)
    last = torch.tensor([5] * n)
    ids, probs = proposer.propose(hidden, last, 2, torch.ones(n), torch.full((n,), 6), torch.full((n,), 0.9),
                                  torch.rand(n, 2))
    assert chi_square_p_value(torch.bincount(ids[:, 0], minlength=V), probs[0, 0]) > 1e-3
    first = int(ids[:, 0].mode().values)
    rows = ids[:, 0] == first
    assert torch.allclose(probs[rows, 1], probs[rows, 1][0].expand(int(rows.sum()), -1))
    assert chi_square_p_value(torch.bincount(ids[rows, 1], minlength=V), probs[rows, 1][0]) > 1e-3
    assert ((probs > 0).sum(-1) <= 6).all(), "top-k was not applied to the draft distribution"


@pytest.mark.parametrize("rank", [1, 3])  # rank 1 takes the independent heads' path
def test_greedy_rows_take_the_chain_argmax(tmp_path, rank):
    proposer = tiny_proposer(tmp_path, rank=rank)
    hidden, last = torch.randn(1, H), torch.tensor([1])
    ids, probs = proposer.propose(hidden, last, 3, torch.zeros(1), None, None, torch.rand(1, 3))
    log_w, logits = proposer.heads(hidden, last)
    comp = logits.softmax(-1)[0]
    post = log_w[0].exp()
    for s in range(3):
        assert ids[0, s] == (post[:, None] * comp[s]).sum(0).argmax()
        post = post * comp[s, :, ids[0, s]]


def test_joint_log_likelihood_matches_brute_force(tmp_path):
    proposer = tiny_proposer(tmp_path)
    hidden, last = torch.randn(4, H), torch.tensor([0, 1, 2, 3])
    labels = torch.randint(V, (4, 3))
    log_w, logits = proposer.heads(hidden, last)
    ll, resp = joint_log_likelihood(log_w, logits, labels)
    comp = logits.log_softmax(-1)
    for b in range(4):
        per = log_w[b] + sum(comp[b, s, :, labels[b, s]] for s in range(3))
        assert torch.allclose(ll[b], torch.logsumexp(per, 0), atol=1e-5)
    assert torch.allclose(resp.sum(-1), torch.ones(4))


def test_rank_one_drafts_each_head_independently(tmp_path):
    """Rank 1 skips the posterior updates: position s is head s's own processed distribution, picked at u_s, in
    target ids (a draft vocabulary of 8 of the 12 target tokens, out of order)."""
    draft_vocab = [11, 0, 7, 3, 5, 9, 2, 6]
    proposer = tiny_proposer(tmp_path, rank=1, draft_vocab=draft_vocab)
    torch.manual_seed(1)
    hidden, last, u = torch.randn(6, H), torch.randint(V, (6,)), torch.rand(6, 3)
    temps = torch.tensor([0.0, 0.7, 0.0, 1.3, 0.5, 1.0])
    top_k, top_p = torch.tensor([0, 5, 0, 3, 0, 0]), torch.tensor([0.9, 1.0, 0.5, 0.8, 0.6, 1.0])
    ids, probs = proposer.propose(hidden, last, 3, temps, top_k, top_p, u)
    logits = proposer.heads(hidden, last)[1][:, :3, 0]
    scale = torch.where(temps > 0, temps, 1.0)[:, None, None]
    assert torch.allclose(proposer.last_confidence, (logits / scale).softmax(-1).amax(-1), atol=1e-6)
    vocab = torch.tensor(draft_vocab)
    for s in range(3):
        expected = processed_probs(logits[:, s], temps, top_k, top_p)
        assert torch.allclose(probs[:, s, vocab], expected, atol=1e-6)
        assert probs[:, s].sum(-1).allclose(torch.ones(6)), "probability outside the draft vocabulary"
        assert torch.equal(ids[:, s], vocab[pick_from_probs(u[:, s], expected)])
    mixed_ids, no_probs = proposer.propose(hidden, last, 3, temps, top_k, top_p, u, return_probs=False)
    assert no_probs is None and torch.equal(mixed_ids, ids)
    greedy_ids, _ = proposer.propose(hidden, last, 3, torch.zeros(6), None, None, u, return_probs=False)
    assert torch.equal(greedy_ids, vocab[logits.argmax(-1)])
