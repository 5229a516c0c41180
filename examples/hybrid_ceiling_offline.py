"""How far any hybrid of a context match and a learned draft could go on the embedded default: greedy speculative
decoding (T = 0, k = 3) replayed on the target's own greedy text, where a draft is accepted exactly while it equals
that text. At every step each drafter's accepted length is known, so besides each drafter alone this walks:

- "match first": the match where one exists, else the learned draft (the hybrid as served, without a cut);
- "oracle": at every step whichever of the two is accepted further. No real hybrid can choose better, since it
  must choose before the target verifies.

Tokens per decode step (1 + accepted) is what a step earns. What it costs is modelled in units of a plain decode step:
1, plus beta per draft token verified, plus the learned draft's forward where it ran (CP heads skip matched rows; a
PTP forward runs every step; the oracle runs both). The report gives each hybrid's tokens per step over the better
drafter alone, and its speed over it for beta from 0 (verifying is free: memory-bound) to 0.2.

    .venv/bin/python examples/hybrid_ceiling_offline.py [--prompts 24] [--first 8] [--out runs/hybrid_ceiling]

Matches: vLLM's ngram (suffix of 2-4 tokens, as the bench) and vLLM's suffix decoding (Arctic Inference's trees over
the request and the earlier requests' outputs, vLLM's default settings). Learned drafts: the shipped CP rank-1 heads
and PTP draft, drafting as served at T = 0. Held-out chat (sharegpt) and code (humaneval) prompts after the 8 the
bench uses; the greedy texts are those of examples/match_acceptance_offline.py (made once, cached in --out). Each
drafter's accepted length at every anchor is kept in --out/per_anchor.npz (examples/learned_quality_offline.py).
"""
import argparse
import json
import pathlib
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from match_acceptance_offline import greedy_texts  # noqa: E402

K = 3
DRAFTS = pathlib.Path(__file__).parent / "drafts"
NGRAM_LENGTHS = (2, 4)
# The cost model of speed_ratio, in units of a plain decode step at batch 1: a learned forward costs what the bench
# measured as the drafters' share of a step (CP heads 0.10, PTP 0.12; 2026-12-07), a verified draft token beta.
DELTA = {"cp": 0.10, "ptp": 0.12}
BETAS = (0.0, 0.05, 0.1, 0.2)


def target_states(model, prompt: list[int], output: list[int], aux_layers: list[int]):
    """The target's float32 states along prompt + output: (tokens [L], aux [L, n_aux, H], final [L, H])."""
    tokens = torch.tensor(prompt + output)
    with torch.no_grad():
        out = model.model(input_ids=tokens[None], output_hidden_states=True)
    aux = torch.stack([out.hidden_states[a][0] for a in aux_layers], dim=1)  # the residual stream entering each
    return tokens, aux, out.last_hidden_state[0]


def accepted_lengths(draft: torch.Tensor, tokens: torch.Tensor, anchors: torch.Tensor) -> np.ndarray:
    """draft [A, k] proposed at anchor t (z_{t+1} just sampled) -> leading tokens equal to z_{t+2..}."""
    later = anchors[:, None] + 2 + torch.arange(draft.shape[1])[None]
    match = (later < len(tokens)) & (draft == tokens[later.clamp(max=len(tokens) - 1)])
    return match.long().cumprod(-1).sum(-1).numpy()


def cp_drafts(proposer, final: torch.Tensor, tokens: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The heads' greedy chain at each anchor, from the state that produced z_{t+1} and z_{t+1} itself."""
    A = len(anchors)
    ids, _ = proposer.propose(final[anchors], tokens[anchors + 1], K, torch.zeros(A), None, None,
                              torch.zeros(A, K), return_probs=False)
    return ids


def ptp_accepted(draft, tokens, aux, final, prompt_len: int, lm_head) -> np.ndarray:
    from vllm_ptp.training.acceptance import TeacherSequence, anchor_chains
    seq = TeacherSequence(tokens=tokens, prompt_len=prompt_len, temperature=0.0, aux=aux, final=final)
    _, _, _, accepted = anchor_chains(draft, seq, lm_head, K)
    return accepted.long().cumprod(-1).sum(-1).numpy()


def ngram_drafts(tokens: list[int], anchors, k: int) -> list[list[int]]:
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer
    low, high = NGRAM_LENGTHS
    proposer = NgramProposer(SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=low, prompt_lookup_max=high, num_speculative_tokens=k),
        model_config=SimpleNamespace(max_model_len=8192), scheduler_config=SimpleNamespace(max_num_seqs=1),
        parallel_config=SimpleNamespace(tensor_parallel_size=1)))
    history = np.array([tokens], dtype=np.int32)
    return [list(proposer.propose(k, [[0]], np.array([t + 2], dtype=np.int32), history)[0]) for t in anchors]


def suffix_drafts(cache, request: str, prompt: list[int], tokens: list[int], anchors, k: int) -> list[list[int]]:
    """vLLM's suffix decoding as its proposer drives the cache: the prompt's tree first, then each sampled token
    added before the step's speculation; the request's output joins the tree of earlier outputs when it ends."""
    defaults = SimpleNamespace(max_tree_depth=24, max_spec_factor=1.0, min_token_prob=0.1)
    cache.start_request(request, np.array(prompt, dtype=np.int32))
    drafts = []
    for t in anchors:
        cache.add_active_response(request, [tokens[t + 1]])
        pattern = np.array(tokens[max(0, t + 2 - defaults.max_tree_depth):t + 2], dtype=np.int32)
        drafts.append(list(cache.speculate(request, pattern, max_spec_tokens=k,
                                           max_spec_factor=defaults.max_spec_factor,
                                           min_token_prob=defaults.min_token_prob).token_ids))
    cache.stop_request(request)
    return drafts


def walk(accepted: np.ndarray, verified: np.ndarray, forward: np.ndarray, prompt_len: int, length: int
         ) -> np.ndarray:
    """Greedy decode steps along the text: a step at anchor t (accepted[i] leading drafts of verified[i], i = t -
    anchor0; forward[i]: the learned draft's forward ran) moves to t + accepted + 1 -> [decode steps, tokens they
    made, draft tokens verified, learned forwards]."""
    t, totals = prompt_len - 1, np.zeros(4)
    while t + 2 < length:
        i = t - (prompt_len - 1)
        a = int(min(accepted[i], length - t - 2))
        totals += (1, a + 1, verified[i], forward[i])
        t += a + 1
    return totals


def speed_ratio(hybrid: np.ndarray, alone: np.ndarray, beta: float, delta: float) -> float:
    """Tokens per second of the hybrid over one drafter alone, each step costing 1 + beta per verified draft token
    + delta where the learned draft's forward ran (in units of a plain decode step)."""
    def per_second(t):
        steps, made, verified, forwards = t
        return made / (steps + beta * verified + delta * forwards)
    return per_second(hybrid) / per_second(alone)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=24, help="per dataset")
    parser.add_argument("--first", type=int, default=8, help="held-out prompts skipped (8: the bench's batch-1 "
                        "prompts; 0: the bench's own, to compare with an engine run)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--match-k", type=int, default=K, help="the most tokens a match drafts (the learned "
                        "drafts draft 3): CP heads in the hybrid take a num_speculative_tokens above their heads")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/hybrid_ceiling"),
                        help="where the greedy texts are cached (one folder per --first and --prompts)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cached = args.out / "greedy.json"
    if not cached.exists():
        cached.write_text(json.dumps(greedy_texts(args.prompts, args.max_tokens, args.first)))
    texts = json.loads(cached.read_text())

    from arctic_inference.suffix_decoding import SuffixDecodingCache
    from transformers import AutoModelForCausalLM

    from vllm_ptp.embedded import default_target_dir
    from vllm_ptp.models.ptp_draft import load_ptp_draft
    from vllm_ptp.proposers.cp_proposer import CPProposer
    model = AutoModelForCausalLM.from_pretrained(default_target_dir(), dtype=torch.float32).eval()
    embed, lm_head = model.get_input_embeddings().weight.detach(), model.lm_head.weight.detach()
    cp = CPProposer(DRAFTS / "cp_smollm2_r1")
    cp.attach_target(embed, lm_head, embed.shape[0])
    ptp = load_ptp_draft(DRAFTS / "ptp_smollm2").eval()
    ptp.embed = embed
    cache = SuffixDecodingCache(max_tree_depth=24, max_cached_requests=10000)

    totals: dict[tuple[str, str], np.ndarray] = {}
    per_anchor: dict[str, np.ndarray] = {}  # for examples/learned_quality_offline.py
    for dataset, rows in texts.items():
        for n, (prompt, output) in enumerate(rows):
            tokens, aux, final = target_states(model, prompt, output, ptp.config.aux_layer_ids)
            P, L = len(prompt), len(tokens)
            anchors = torch.arange(P - 1, L - 2)
            as_list = tokens.tolist()
            matches = {"ngram": ngram_drafts(as_list, anchors.tolist(), args.match_k),
                       "suffix": suffix_drafts(cache, f"{dataset}-{n}", prompt, as_list, anchors.tolist(),
                                               args.match_k)}
            alone = {name: accepted_lengths(_padded(drafts, args.match_k), tokens, anchors)
                     for name, drafts in matches.items()}
            alone["cp"] = accepted_lengths(cp_drafts(cp, final, tokens, anchors), tokens, anchors)
            alone["ptp"] = ptp_accepted(ptp, tokens, aux, final, P, lm_head)
            drafted = {name: np.array([min(len(d), args.match_k) for d in drafts]) for name, drafts in matches.items()}
            key = f"{dataset}/{n}"
            per_anchor |= {f"{key}/accepted/{name}": lengths for name, lengths in alone.items()}
            per_anchor |= {f"{key}/drafted/{name}": lengths for name, lengths in drafted.items()}
            per_anchor[f"{key}/span"] = np.array([P, L])
            full, every, never = np.full(len(anchors), K), np.ones(len(anchors)), np.zeros(len(anchors))
            # (accepted, verified, learned forward ran) per anchor
            policies = {name: (alone[name], drafted[name], never) for name in matches}
            if args.match_k > K:  # the same matches cut at the learned drafts' k (vLLM's with k = 3)
                policies |= {f"{name} k={K}": (np.minimum(alone[name], K), np.minimum(drafted[name], K), never)
                             for name in matches}
            policies |= {name: (alone[name], full, every) for name in ("cp", "ptp")}
            for match in matches:
                has_match = drafted[match] > 0
                for learned in ("cp", "ptp"):
                    # CP heads skip matched rows; a PTP forward runs every step (its KV cache stays in step)
                    forward = ~has_match if learned == "cp" else every
                    policies[f"{learned}+{match} match first"] = (
                        np.where(has_match, alone[match], alone[learned]),
                        np.where(has_match, drafted[match], K), forward)
                    better = alone[match] >= alone[learned]
                    policies[f"{learned}+{match} oracle"] = (
                        np.where(better, alone[match], alone[learned]), np.where(better, drafted[match], K), every)
            for name, (accepted, verified, forward) in policies.items():
                totals[(dataset, name)] = totals.get((dataset, name), 0) + walk(accepted, verified, forward, P, L)
            print(f"{dataset} {n + 1}/{len(rows)}", flush=True)
    lines = []
    for dataset in texts:
        rate = {name: t[1] / t[0] for (d, name), t in totals.items() if d == dataset}
        for name, value in rate.items():
            lines.append(f"{dataset:9s} {name:22s} {value:.3f} tokens/step")
        lines.append(f"{dataset:9s} (matches draft up to {args.match_k} tokens, learned drafts {K})")
        for match in ("ngram", "suffix"):
            for learned in ("cp", "ptp"):
                alone_ones = [match, learned] + ([f"{match} k={K}"] if args.match_k > K else [])
                better = max(alone_ones, key=rate.get)
                for policy in ("match first", "oracle"):
                    hybrid = totals[(dataset, f"{learned}+{match} {policy}")]
                    alone = totals[(dataset, better)]
                    speeds = "  ".join(f"beta {beta:g}: {speed_ratio(hybrid, alone, beta, DELTA[learned]):.3f}x"
                                       for beta in BETAS)
                    lines.append(f"{dataset:9s} {learned}+{match} {policy} over {better} alone: tokens/step "
                                 f"{hybrid[1] / hybrid[0] / rate[better]:.3f}x; speed with a learned forward of "
                                 f"{DELTA[learned]:g} step, {speeds}")
    text = "\n".join(lines)
    (args.out / "report.txt").write_text(text + "\n")
    np.savez_compressed(args.out / "per_anchor.npz", **per_anchor)
    print(text)


def _padded(drafts: list[list[int]], k: int) -> torch.Tensor:
    """Drafts of 0..k tokens -> [A, k] with -1 (never a token) after each draft's end."""
    out = torch.full((len(drafts), k), -1, dtype=torch.long)
    for i, draft in enumerate(drafts):
        out[i, :len(draft)] = torch.tensor(draft[:k], dtype=torch.long)
    return out


if __name__ == "__main__":
    main()
