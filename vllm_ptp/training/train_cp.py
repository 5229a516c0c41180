"""Train CP heads on the PTP teacher data (`vllm-ptp teacher`): joint mixture NLL + load-balancing, resumable,
seeded. The states are read from the memory-mapped shards a batch at a time, so memory does not grow with the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vllm_ptp.models.checkpoint import save_checkpoint
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import CPHeads, joint_log_likelihood, load_balancing_loss
from vllm_ptp.training import distributed
from vllm_ptp.training.common import TrainArgs, load_target_head, make_optimizer, resume, run_steps
from vllm_ptp.training.head_examples import PAST_END, build_head_examples
from vllm_ptp.training.ptp_data import load_ptp_teacher_data


@dataclass
class CPTrainArgs(TrainArgs):
    steps: int = 1500
    lr: float = 2e-3
    rank: int = 8
    heads: int = 3
    balance_weight: float = 0.01
    adapter_dim: int = 64
    eval_fraction: float = 0.03  # with eval_max_sequences the PTP draft's: both hold out the same sequences
    eval_max_sequences: int = 96


def train_cp(args: CPTrainArgs) -> Path:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    embed, lm_head, verifier = load_target_head(args.target)
    data = load_ptp_teacher_data(args.data_dir)
    V = embed.shape[0]
    draft_vocab, coverage = data.draft_vocabulary(V, args.draft_vocab_size)
    to_draft = torch.full((V,), -1, dtype=torch.long)
    to_draft[draft_vocab] = torch.arange(len(draft_vocab))
    train_seq, eval_seq = data.split(args.eval_fraction, args.seed, args.eval_max_sequences)
    train, held_out = (build_head_examples(data, seq, args.heads) for seq in (train_seq, eval_seq))

    config = CPConfig(hidden_size=embed.shape[1], vocab_size=V, num_heads=args.heads, rank=args.rank,
                      draft_vocab_size=len(draft_vocab), adapter_dim=args.adapter_dim, verifier=verifier)
    heads = CPHeads(config)
    heads.draft_vocab.copy_(draft_vocab)
    heads.to(device)
    heads.attach_target(embed.to(device), lm_head.to(device))

    trainable = [p for p in heads.parameters() if p.requires_grad]
    optimizer, schedule = make_optimizer(trainable, args.lr, args.steps, 50)
    step = resume(out, heads, optimizer, schedule)

    def batch(examples, idx):
        """-> the final states, the tokens they produced, the labels as draft ids (-1: outside the draft
        vocabulary) and which labels lie inside their sequence."""
        positions, labels = examples.positions[idx], examples.labels[idx].long()
        in_sequence = labels != PAST_END
        labels = torch.where(in_sequence, to_draft[labels.clamp(min=0)], -1)
        return (data.final_rows(positions).to(device), data.tokens[positions + 1].to(device), labels.to(device),
                in_sequence.to(device))

    eval_batch = batch(held_out, torch.arange(len(held_out.positions)))

    def train_step(done: int, g: torch.Generator):
        idx = distributed.share(torch.randint(len(train.positions), (args.batch_size,), generator=g))
        hidden, last, lab, mask = batch(train, idx)
        log_w, logits = heads(hidden, last)
        ll, resp = joint_log_likelihood(log_w, logits, lab, mask)
        nll = -ll.sum() / distributed.global_count(mask.sum()).clamp(min=1)
        balance = load_balancing_loss(log_w, resp)  # (under DDP: of each process's share, a regulariser)
        return nll + args.balance_weight * balance, {"train_nll_per_token": nll.item(), "balance": balance.item()}

    step = run_steps(out, heads, trainable, optimizer, schedule, args, step, f"train cp r={args.rank} n={args.heads}",
                     train_step, lambda: evaluate(heads, eval_batch))
    if step < args.steps or not distributed.is_main():
        return out  # stopped by max_hours (the same command resumes), or not the process that writes
    final = evaluate(heads, eval_batch)
    card = model_card(args, config, final, coverage, len(train.positions), len(train_seq))
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


def model_card(args: CPTrainArgs, config: CPConfig, final: dict, coverage: float, examples: int, sequences: int
               ) -> str:
    return f"""# CP-decomposition heads (rank {config.rank}, {config.num_heads} heads)

Draft for `{config.verifier.get('name_or_path')}` served by vLLM with vllm-ptp:
`--speculative-config '{{"model": "<this folder>"}}'` (method "cp" is detected from config.json).

- Heads read the target's final hidden state and the embedding of the token it produced; the target's embedding and
  LM head are reused (not stored). Draft vocabulary: the {config.draft_vocab_size} most frequent teacher completion
  tokens ({coverage:.1%} of them).
- Training: joint mixture NLL + {args.balance_weight} x load-balancing, {args.steps} steps x batch {args.batch_size},
  AdamW lr {args.lr}, seed {args.seed}, on {examples} positions of {sequences} teacher sequences from
  `{args.data_dir}` (the PTP draft's teacher data; the same held-out sequences).
- Held-out: NLL per token {final['eval_nll_per_token']}, top-1 accuracy of each head's marginal
  {final['eval_top1_marginal']}.

Command: `{args.command}`
"""
