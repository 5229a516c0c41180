"""Train CP heads on teacher data: joint mixture NLL + load-balancing, resumable, seeded."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vllm_ptp.models.checkpoint import save_checkpoint
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import CPHeads, joint_log_likelihood, load_balancing_loss
from vllm_ptp.training import distributed
from vllm_ptp.training.common import TrainArgs, load_target_head, make_optimizer, resume, run_steps
from vllm_ptp.training.teacher import load_teacher_data


@dataclass
class CPTrainArgs(TrainArgs):
    steps: int = 1500
    lr: float = 2e-3
    rank: int = 8
    heads: int = 3
    balance_weight: float = 0.01
    adapter_dim: int = 64


def frequent_tokens(data: dict[str, torch.Tensor], vocab_size: int, k: int) -> torch.Tensor:
    ids = torch.cat([data["labels"].flatten(), data["last_token"].flatten()]).long()
    counts = torch.bincount(ids[ids >= 0], minlength=vocab_size)
    return counts.topk(min(k, vocab_size)).indices.sort().values


def train_cp(args: CPTrainArgs) -> Path:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    embed, lm_head, verifier = load_target_head(args.target)
    data = load_teacher_data(args.data_dir)
    draft_vocab = frequent_tokens(data, embed.shape[0], args.draft_vocab_size)
    to_draft = torch.full((embed.shape[0],), -1, dtype=torch.long)
    to_draft[draft_vocab] = torch.arange(len(draft_vocab))
    labels = data["labels"][:, :args.heads].long()
    labels = torch.where(labels >= 0, to_draft[labels.clamp(min=0)], torch.full_like(labels, -2))
    coverage = float((labels[labels != -2] >= 0).float().mean())
    in_sequence = labels != -2
    labels = labels.clamp(min=-1)

    config = CPConfig(hidden_size=embed.shape[1], vocab_size=embed.shape[0], num_heads=args.heads, rank=args.rank,
                      draft_vocab_size=len(draft_vocab), adapter_dim=args.adapter_dim, verifier=verifier)
    heads = CPHeads(config)
    heads.draft_vocab.copy_(draft_vocab)
    heads.to(device)
    heads.attach_target(embed.to(device), lm_head.to(device))

    # Held out: the last positions, i.e. whole sequences (a random split of positions would leak their neighbours).
    N = labels.shape[0]
    n_eval = max(1, int(N * args.eval_fraction))
    train_idx, eval_idx = torch.arange(N - n_eval), torch.arange(N - n_eval, N)
    trainable = [p for p in heads.parameters() if p.requires_grad]
    optimizer, schedule = make_optimizer(trainable, args.lr, args.steps, 50)
    step = resume(out, heads, optimizer, schedule)

    def batch(indices):
        return (data["hidden"][indices].to(device), data["last_token"][indices].long().to(device),
                labels[indices].to(device), in_sequence[indices].to(device))

    def train_step(done: int, g: torch.Generator):
        idx = train_idx[distributed.share(torch.randint(len(train_idx), (args.batch_size,), generator=g))]
        hidden, last, lab, mask = batch(idx)
        log_w, logits = heads(hidden, last)
        ll, resp = joint_log_likelihood(log_w, logits, lab, mask)
        nll = -ll.sum() / distributed.global_count(mask.sum()).clamp(min=1)
        balance = load_balancing_loss(log_w, resp)  # (under DDP: of each process's share, a regulariser)
        return nll + args.balance_weight * balance, {"train_nll_per_token": nll.item(), "balance": balance.item()}

    step = run_steps(out, heads, trainable, optimizer, schedule, args, step, f"train cp r={args.rank} n={args.heads}",
                     train_step, lambda: evaluate(heads, batch(eval_idx)))
    if step < args.steps or not distributed.is_main():
        return out  # stopped by max_hours (the same command resumes), or not the process that writes
    final = evaluate(heads, batch(eval_idx))
    card = model_card(args, config, final, coverage, N)
    shipped = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in heads.state_dict().items()}
    save_checkpoint(out, config.to_json(), shipped, card)
    return out


@torch.no_grad()
def evaluate(heads: CPHeads, batch) -> dict:
    hidden, last, lab, mask = batch
    nll, hits, counts = 0.0, torch.zeros(heads.config.num_heads), torch.zeros(heads.config.num_heads)
    for i in range(0, hidden.shape[0], 256):
        log_w, logits = heads(hidden[i:i + 256], last[i:i + 256])
        ll, _ = joint_log_likelihood(log_w, logits, lab[i:i + 256], mask[i:i + 256])
        nll -= ll.sum().item()
        marginal = torch.einsum("br,bnrv->bnv", log_w.exp(), logits.softmax(-1))
        valid = mask[i:i + 256]
        hits += ((marginal.argmax(-1) == lab[i:i + 256]) & valid).sum(0).float()
        counts += valid.sum(0).float()
    return {"eval_nll_per_token": round(nll / counts.sum().item(), 4),
            "eval_top1_marginal": [round(x, 4) for x in (hits / counts.clamp(min=1)).tolist()]}


def model_card(args: CPTrainArgs, config: CPConfig, final: dict, coverage: float, examples: int) -> str:
    return f"""# CP-decomposition heads (rank {config.rank}, {config.num_heads} heads)

Draft for `{config.verifier.get('name_or_path')}` served by vLLM with vllm-ptp:
`--speculative-config '{{"model": "<this folder>"}}'` (method "cp" is detected from config.json).

- Heads read the target's final hidden state and the embedding of the token it produced; the target's embedding and
  LM head are reused (not stored). Draft vocabulary: the {config.draft_vocab_size} most frequent teacher tokens
  ({coverage:.1%} of teacher tokens).
- Training: joint mixture NLL + {args.balance_weight} x load-balancing, {args.steps} steps x batch {args.batch_size},
  AdamW lr {args.lr}, seed {args.seed}, on {examples} teacher positions from `{args.data_dir}`.
- Held-out: NLL per token {final['eval_nll_per_token']}, top-1 accuracy of each head's marginal
  {final['eval_top1_marginal']}.

Command: `{args.command}`
"""
