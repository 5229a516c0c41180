"""Train Medusa heads on the PTP teacher data (same sequences, same held-out split, same draft vocabulary rule).

Example: the state h_p at position p (it produced x_{p+1}, a completion token) with labels x_{p+2+i} for head i.
Loss per head: cross-entropy on the teacher's sampled token ("ce"), or on the target's own distribution at that
position ("soft", self-distillation: the target's LM head on its state h_{p+1+i}, temperature 1). To keep a step
cheap on CPU the softmax runs over the training vocabulary (the most frequent teacher tokens, as for the PTP and CP
drafts; other labels are left out of the loss); the shipped heads and the evaluation score the full vocabulary, as
vLLM does (it cannot load a truncated one, see medusa_config.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vllm_ptp.models.checkpoint import save_checkpoint
from vllm_ptp.models.medusa_config import MedusaConfig
from vllm_ptp.models.medusa_heads import MedusaHeads
from vllm_ptp.training import distributed
from vllm_ptp.training.common import TrainArgs, load_target_head, make_optimizer, resume, run_steps
from vllm_ptp.training.head_examples import HeadExamples, build_head_examples
from vllm_ptp.training.ptp_data import load_ptp_teacher_data



@dataclass
class MedusaTrainArgs(TrainArgs):
    steps: int = 2000
    batch_size: int = 256  # positions per step (the PTP draft: 8 sequences x 32 anchors)
    lr: float = 3e-3
    heads: int = 3
    blocks: int = 1
    loss: str = "ce"  # "ce" | "soft"
    eval_fraction: float = 0.03  # with eval_max_sequences the PTP draft's: both hold out the same sequences
    eval_max_sequences: int = 96


def head_losses(heads: MedusaHeads, final: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor,
                labels: torch.Tensor, loss: str, rows: torch.Tensor) -> torch.Tensor:
    """Loss per (position, head) [B, K] over the vocabulary `rows` (the LM head's rows for it, [V', H]); `labels` are
    indices into it, -1 (left out: zero loss) when the token is not in it or beyond the sequence. final(positions):
    the target's final states there."""
    logits = (heads.states(final(positions)) @ rows.T).float()
    if loss == "soft":
        K = labels.shape[1]
        later = positions[:, None] + 1 + torch.arange(K, device=positions.device)  # labels -1 past the end
        with torch.no_grad():
            teacher = (final(later.flatten()).view(*later.shape, -1).to(rows.dtype) @ rows.T).float().softmax(-1)
        per = -(teacher * logits.log_softmax(-1)).sum(-1)
    else:
        per = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return per * (labels >= 0)


def train_medusa(args: MedusaTrainArgs) -> Path:
    if args.loss not in ("ce", "soft"):
        raise ValueError(f"loss must be 'ce' or 'soft', got {args.loss!r}")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    _, lm_head, verifier = load_target_head(args.target)
    data = load_ptp_teacher_data(args.data_dir)
    V, H = lm_head.shape
    vocab, coverage = data.draft_vocabulary(V, args.draft_vocab_size)
    to_vocab = torch.full((V,), -1, dtype=torch.long)
    to_vocab[vocab] = torch.arange(len(vocab))

    config = MedusaConfig(hidden_size=H, vocab_size=V, num_heads=args.heads, num_hidden_layers=args.blocks,
                          verifier=verifier)
    heads = MedusaHeads(config)
    heads.init_from_target(lm_head)
    heads.to(device)
    rows = heads.lm_head_weight[vocab.to(device)]

    def final(positions: torch.Tensor) -> torch.Tensor:  # only the final states are used
        return data.final_rows(positions.cpu().clamp(max=len(data.tokens) - 1)).to(device)
    to_vocab = to_vocab.to(device)

    # Held out: whole sequences, drawn exactly as the PTP draft draws them.
    train_seq, eval_seq = data.split(args.eval_fraction, args.seed, args.eval_max_sequences)
    train = build_head_examples(data, train_seq, args.heads)
    held_out = build_head_examples(data, eval_seq, args.heads)

    trainable = [p for p in heads.parameters() if p.requires_grad]
    optimizer, schedule = make_optimizer(trainable, args.lr, args.steps, max(1, min(100, args.steps // 10)))
    step = resume(out, heads, optimizer, schedule)

    def train_step(done: int, g: torch.Generator):
        idx = distributed.share(torch.randint(len(train.positions), (args.batch_size,), generator=g))
        labels = train.labels[idx].to(device)
        labels = torch.where(labels >= 0, to_vocab[labels.clamp(min=0)], labels)
        per = head_losses(heads, final, train.positions[idx].to(device), labels, args.loss, rows)
        per_head = per.sum(0) / distributed.global_count((labels >= 0).sum(0)).clamp(min=1)
        return per_head.mean(), {"train_loss_per_head": [round(x, 3) for x in per_head.tolist()]}

    step = run_steps(out, heads, trainable, optimizer, schedule, args, step, f"train medusa {args.heads} heads",
                     train_step, lambda: evaluate(heads, final, held_out, device))
    if step < args.steps or not distributed.is_main():
        return out  # stopped by max_hours (the same command resumes), or not the process that writes
    final_eval = evaluate(heads, final, held_out, device)
    shipped = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in heads.state_dict().items()}
    save_checkpoint(out, config.to_json(), shipped,
                    model_card(args, config, final_eval, len(vocab), coverage, len(train.positions),
                               len(train_seq)))
    return out


@torch.no_grad()
def evaluate(heads: MedusaHeads, final: Callable[[torch.Tensor], torch.Tensor], examples: HeadExamples, device
             ) -> dict:
    """Held-out CE and top-1 per head over the full vocabulary (what vLLM drafts), overall and on greedy / sampled
    teacher sequences, plus the mean number of leading heads all right on greedy sequences: what vLLM accepts per
    step at temperature 0 (positions whose window runs past the sequence end left out)."""
    ce, right = [], []
    for i in range(0, len(examples.positions), 256):
        labels = examples.labels[i:i + 256].to(device)
        logits = heads(final(examples.positions[i:i + 256])).float()
        ce.append(F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none").cpu())
        right.append((logits.argmax(-1) == labels).cpu())
    valid = examples.labels >= 0
    ce, right = torch.cat(ce) * valid, torch.cat(right) & valid
    out = {}
    for name, rows in (("", torch.ones_like(examples.greedy)), ("_greedy", examples.greedy),
                       ("_sampled", ~examples.greedy)):
        counts = valid[rows].sum(0).clamp(min=1)
        out[f"eval_ce_per_head{name}"] = [round(x, 4) for x in (ce[rows].sum(0) / counts).tolist()]
        out[f"eval_top1_per_head{name}"] = [round(x, 4) for x in (right[rows].sum(0) / counts).tolist()]
    full = examples.greedy & valid.all(1)
    accepted = right[full].long().cumprod(1).sum(1).float()
    out["eval_mean_accepted_greedy"] = round(float(accepted.mean()), 4) if len(accepted) else None
    return out


def model_card(args: MedusaTrainArgs, config: MedusaConfig, final: dict, train_vocab: int, coverage: float,
               examples: int, sequences: int) -> str:
    loss = ("cross-entropy on the teacher's sampled tokens" if args.loss == "ce" else
            "cross-entropy on the target's own distribution at each drafted position (self-distillation, T=1)")
    return f"""# Medusa heads ({config.num_heads} heads, {config.num_hidden_layers} residual block(s) each)

Baseline draft for `{config.verifier.get('name_or_path')}`, in the checkpoint layout vLLM loads itself (no vllm-ptp
needed): `--speculative-config '{{"method": "medusa", "model": "<this folder>", "num_speculative_tokens":
{config.num_heads}}}'` (the method is also detected from `model_type`, and `num_speculative_tokens` defaults to
{config.num_heads}; fewer is fine, more is not).

- Head i (0-based) reads the target's final hidden state h_t, the state that produced the token x_(t+1) vLLM just
  sampled, and drafts x_(t+2+i). Blocks x + SiLU(Wx + b), zero-initialised. All heads share the target's LM head,
  frozen and stored once (`original_lm_head`): only the residual blocks are trained, which keeps training cheap on
  CPU (Medusa-1 also trains one LM head per head).
- Heads score the full vocabulary: vLLM 0.32 fails to load a truncated one (`token_map`). Training ran the softmax
  over the {train_vocab} most frequent teacher completion tokens ({coverage:.1%} of them), as the PTP and CP drafts do.
- vLLM's Medusa drafts each head's argmax and passes no draft probabilities: at temperature > 0 the rejection sampler
  treats the drafts as one-hot (lossless, lower acceptance than a probabilistic draft).
- Training: {loss}, {args.steps} steps x {args.batch_size} positions, AdamW lr {args.lr}, seed {args.seed}, on
  {examples} positions of {sequences} teacher sequences from `{args.data_dir}` (the PTP draft's teacher data; the
  same held-out sequences).
- Held-out, full vocabulary: CE per head {final['eval_ce_per_head']}, top-1 per head {final['eval_top1_per_head']}
  (greedy teacher sequences {final['eval_top1_per_head_greedy']}, sampled {final['eval_top1_per_head_sampled']});
  mean number of leading heads right on greedy sequences {final['eval_mean_accepted_greedy']} (accepted draft tokens
  per step at temperature 0).

Command: `{args.command}`
"""
