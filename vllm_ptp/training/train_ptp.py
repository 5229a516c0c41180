"""Train a PTP draft by distillation from the target's own continuations: resumable, seeded, CPU or CUDA.

One example is a window of a teacher sequence: context slots (target states + next token, as vLLM feeds the draft)
and, at a few anchor positions t, K-1 mask slots at positions t+1..t+K-1. Slot 0 (the anchor's own context slot) is
trained to predict x_{t+2}, mask slot m to predict x_{t+2+m}, and mask slot m is given u_m: a u inside the CDF
interval of x_{t+1+m} under the teacher's processed distribution (temperature of the sequence, draft vocabulary,
token-id order), u = left + z (right - left) with z ~ Beta(0.3, 0.3) (`u_source="teacher"`), or inside the draft's own
interval of that token (`u_source="self"`, the teacher-free inverse-autoregressive mode). Loss: cross-entropy of the
slot distribution at the sequence's temperature on the teacher token (or KL to the teacher's distribution), slot m
weighted gamma^m. `u_embedding="none"` trains the independent ablation on the same slots; `conditioning=False` the
same without any conditioning module, exported as vLLM's own P-EAGLE type ("peagle"). `train_slot_draft` is the loop
shared with the EAGLE-3 baseline (train_eagle3.py), which differs only in how the slot rows are computed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vllm_ptp.kernels import cdf_interval
from vllm_ptp.models.checkpoint import CheckpointError, load_matching_weights, save_checkpoint
from vllm_ptp.models.ptp_config import PEAGLE_TYPE, PTP_TYPE, U_EMBEDDINGS, PTPConfig
from vllm_ptp.models.ptp_draft import PTPDraft
from vllm_ptp.training.acceptance import draft_acceptance, teacher_sequences
from vllm_ptp.training import distributed
from vllm_ptp.training.common import STATE_DIR, TrainArgs, load_target_head, make_optimizer, resume, run_steps
from vllm_ptp.training.ptp_data import PTPTeacherData, load_ptp_teacher_data

BETA = 0.3


@dataclass
class SlotTrainArgs(TrainArgs):
    """Options of every draft trained on windows with K slots per anchor (PTP, P-EAGLE, EAGLE-3)."""
    batch_size: int = 8  # sequences
    eval_fraction: float = 0.03
    save_every: int = 250
    slots: int = 4
    loss: str = "ce"
    gamma: float = 1.0
    layers: int = 1
    window: int = 128
    anchors: int = 32
    eval_dir: str | None = None  # held-out teacher folder: the offline acceptance that selects the shipped checkpoint
    eval_max_sequences: int = 96  # of the training teacher data held out for the loss
    init_from: str | None = None  # a draft folder of the same layout whose weights a new run starts from

    def check(self) -> None:
        if self.loss not in ("ce", "kl"):
            raise ValueError(f"loss must be 'ce' or 'kl', got {self.loss!r}")
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, got {self.slots}")


@dataclass
class PTPTrainArgs(SlotTrainArgs):
    u_embedding: str = "quarter_cos"
    u_features: int = 32
    u_source: str = "teacher"
    conditioning: bool = True  # False: no u or temperature embedding at all, exported as speculators "peagle"

    def check(self) -> None:
        super().check()
        if self.u_embedding not in U_EMBEDDINGS:
            raise ValueError(f"u_embedding must be one of {U_EMBEDDINGS}, got {self.u_embedding!r}")
        if self.u_source not in ("teacher", "self"):
            raise ValueError(f"u_source must be 'teacher' or 'self', got {self.u_source!r}")
        if not self.conditioning and self.u_embedding != "none":
            raise ValueError(f"conditioning=False (P-EAGLE) has no u: u_embedding must be 'none', got "
                             f"{self.u_embedding!r}")


@dataclass
class Batch:
    hidden_aux: torch.Tensor    # [B, C, n_aux*H] context target states
    ctx_tokens: torch.Tensor    # [B, C] x_{t+1} of each context slot
    ctx_positions: torch.Tensor  # [B, C]
    mask_positions: torch.Tensor  # [B, M]  M = anchors * (K-1)
    allowed: torch.Tensor       # [B, C+M, C+M]
    temperature: torch.Tensor   # [B]
    targets: torch.Tensor       # [B, C+M] draft ids, -1 = no loss
    slot: torch.Tensor          # [B, C+M] slot index (0 for context rows)
    teacher_final: torch.Tensor  # [B, C+M, H] the target's state that predicts each target (KL)
    u_tokens: torch.Tensor      # [B, M] draft ids of the token whose u each mask slot carries (-1: none)
    slot_tokens: torch.Tensor   # [B, M] that token's target id (what an unrolled EAGLE-3 step reads)
    u_final: torch.Tensor       # [B, M, H] the target's state that predicts it
    u_source_row: torch.Tensor  # [B, M] row whose distribution picks that token (for u_source="self")


class PTPExamples:
    def __init__(self, data: PTPTeacherData, to_draft: torch.Tensor, args: SlotTrainArgs):
        self.data, self.to_draft, self.args = data, to_draft, args

    def sequence(self, s: int, g: torch.Generator) -> dict | None:
        d, a, K = self.data, self.args, self.args.slots
        start, L, P = int(d.starts[s]), int(d.starts[s + 1] - d.starts[s]), int(d.prompt_lens[s])
        lo, hi = max(P - 1, 0), L - 3
        if hi < lo:
            return None
        t_hi = int(torch.randint(lo, hi + 1, (1,), generator=g))
        w0 = max(0, t_hi - a.window + 1)
        ctx = torch.arange(w0, t_hi + 1)
        candidates = torch.arange(max(lo, w0), t_hi + 1)
        anchors = candidates[torch.randperm(len(candidates), generator=g)[:a.anchors]].sort().values
        z = d.tokens[start:start + L]
        aux, final = d.states.sequence(s)

        def token_at(i):  # draft id of z_i, -1 past the end or outside the draft vocabulary
            inside = i <= L - 1
            return torch.where(inside, self.to_draft[z[i.clamp(max=L - 1)]], -1)

        ctx_targets = torch.where(ctx + 2 >= P, token_at(ctx + 2), -1)
        m = torch.arange(1, K)
        mask_t = anchors[:, None] + m[None]                       # mask slot positions [A, K-1]
        mask_targets = token_at(anchors[:, None] + 2 + m[None])
        u_index = anchors[:, None] + 1 + m[None]                   # u of z_{t+1+m}
        u_tokens = token_at(u_index)
        # the row (in this example) whose distribution picks z_{t+1+m}: slot m-1 of the same anchor
        C, A = len(ctx), len(anchors)
        mask_rows = C + torch.arange(A * (K - 1)).view(A, K - 1)
        u_row = torch.cat([(anchors - w0)[:, None], mask_rows[:, :-1]], dim=1)
        final_at = lambda i: final[i.clamp(max=L - 1) - 1].float()  # noqa: E731 (state predicting z_i)
        allowed = torch.zeros(C + A * (K - 1), C + A * (K - 1), dtype=torch.bool)
        allowed[:C, :C] = torch.ones(C, C, dtype=torch.bool).tril()
        anchor_of = torch.arange(A).repeat_interleave(K - 1)
        slot_of = m.repeat(A)
        allowed[C:, :C] = torch.arange(C)[None] <= (anchors - w0)[anchor_of][:, None]
        allowed[C:, C:] = (anchor_of[:, None] == anchor_of[None]) & (slot_of[None] <= slot_of[:, None])
        return {
            "hidden_aux": aux[ctx].flatten(1).float(), "ctx_tokens": z[ctx + 1],
            "ctx_positions": ctx, "mask_positions": mask_t.flatten(), "allowed": allowed,
            "temperature": d.temperatures[s],
            "targets": torch.cat([ctx_targets, mask_targets.flatten()]),
            "slot": torch.cat([torch.zeros(C, dtype=torch.long), slot_of]),
            "teacher_final": torch.cat([final_at(ctx + 2), final_at(anchors[:, None] + 2 + m[None]).flatten(0, 1)]),
            "u_tokens": u_tokens.flatten(), "slot_tokens": z[u_index.clamp(max=L - 1)].flatten(),
            "u_final": final_at(u_index).flatten(0, 1),
            "u_source_row": u_row.flatten(),
        }

    def batch(self, sequences: torch.Tensor, g: torch.Generator, device) -> Batch:
        items = [x for x in (self.sequence(int(s), g) for s in sequences) if x is not None]
        C = max(len(x["ctx_tokens"]) for x in items)
        M = max(len(x["mask_positions"]) for x in items)

        def pad(key, n, value=0):
            out = []
            for x in items:
                t = x[key]
                extra = n - t.shape[0]
                out.append(F.pad(t, (0, 0) * (t.dim() - 1) + (0, extra), value=value))
            return torch.stack(out).to(device)

        allowed = torch.zeros(len(items), C + M, C + M, dtype=torch.bool)
        for b, x in enumerate(items):
            c, mm = len(x["ctx_tokens"]), len(x["mask_positions"])
            rows = torch.cat([torch.arange(c), C + torch.arange(mm)])
            allowed[b, rows[:, None], rows[None]] = x["allowed"]
        allowed |= torch.eye(C + M, dtype=torch.bool)  # padding rows attend to themselves (no empty softmax)

        def pad_rows(key, value):  # context rows then mask rows, each padded to C / M
            out = []
            for x in items:
                c = len(x["ctx_tokens"])
                t = x[key]
                parts = [t[:c], t[c:]]
                parts = [F.pad(p, (0, 0) * (p.dim() - 1) + (0, n - p.shape[0]), value=value)
                         for p, n in zip(parts, (C, M))]
                out.append(torch.cat(parts))
            return torch.stack(out).to(device)

        u_row = []
        for x in items:
            c = len(x["ctx_tokens"])
            r = x["u_source_row"]
            u_row.append(F.pad(torch.where(r >= c, r - c + C, r), (0, M - len(r))))
        return Batch(hidden_aux=pad("hidden_aux", C), ctx_tokens=pad("ctx_tokens", C),
                     ctx_positions=pad("ctx_positions", C), mask_positions=pad("mask_positions", M),
                     allowed=allowed.to(device), temperature=torch.stack([x["temperature"] for x in items]).to(device),
                     targets=pad_rows("targets", -1), slot=pad_rows("slot", 0),
                     teacher_final=pad_rows("teacher_final", 0.0), u_tokens=pad("u_tokens", M, -1),
                     slot_tokens=pad("slot_tokens", M),
                     u_final=pad("u_final", M), u_source_row=torch.stack(u_row).to(device))


def inside_interval(logits: torch.Tensor, temperature: torch.Tensor, tokens: torch.Tensor,
                    g: torch.Generator) -> torch.Tensor:
    """u inside each token's CDF interval (z ~ Beta(0.3, 0.3)); U[0,1) where the token has no interval."""
    safe = tokens.clamp(min=0)
    left, right = cdf_interval(logits, temperature, None, None, safe, check=False)
    z = torch.distributions.Beta(BETA, BETA).sample(tokens.shape).to(logits.device)
    u = left + z * (right - left)
    u = torch.minimum(u, torch.nextafter(right, torch.zeros_like(right))).clamp(0, 1 - 2 ** -24)
    free = torch.rand(tokens.shape, generator=g).to(logits.device)
    return torch.where((tokens >= 0) & (right > left), u, free)


def temperature_scale(temperature: torch.Tensor) -> torch.Tensor:
    return torch.where(temperature > 0, temperature, torch.ones_like(temperature))


def forward(model: PTPDraft, batch: Batch, u: torch.Tensor) -> torch.Tensor:
    B, M = batch.mask_positions.shape
    hidden = torch.cat([model.fc(batch.hidden_aux), model.mask_rows(u, batch.temperature)], dim=1)
    tokens = torch.cat([batch.ctx_tokens, torch.full((B, M), model.config.mask_token_id,
                                                     device=batch.ctx_tokens.device)], dim=1)
    positions = torch.cat([batch.ctx_positions, batch.mask_positions], dim=1)
    return model(hidden, tokens, positions, batch.allowed)


def draw_u(model: PTPDraft, batch: Batch, teacher_head: torch.Tensor, source: str, g: torch.Generator):
    B, M = batch.u_tokens.shape
    temps = batch.temperature[:, None].expand(B, M).reshape(-1)
    tokens = batch.u_tokens.reshape(-1)
    if not model.config.uses_u or M == 0:
        return torch.zeros(B, M, device=tokens.device)
    if source == "teacher":
        logits = batch.u_final.reshape(B * M, -1) @ teacher_head.T
        return inside_interval(logits, temps, tokens, g).view(B, M)
    # inverse-autoregressive: slot m's u comes from the draft's own interval, given the u's before it
    K1 = model.config.num_slots - 1
    u = torch.rand(B, M, generator=g).to(tokens.device)
    with torch.no_grad():
        for m in range(K1):
            states = forward(model, batch, u)
            cols = torch.arange(m, M, K1, device=u.device)
            rows = batch.u_source_row[:, cols]
            logits = model.draft_logits(states.gather(1, rows[..., None].expand(-1, -1, states.shape[-1]))).float()
            t = batch.temperature[:, None].expand_as(rows).reshape(-1)
            u[:, cols] = inside_interval(logits.reshape(-1, logits.shape[-1]), t, batch.u_tokens[:, cols].reshape(-1),
                                         g).view(B, -1)
    return u


def losses(model: PTPDraft, batch: Batch, states: torch.Tensor, teacher_head: torch.Tensor, args: SlotTrainArgs):
    """-> (weighted loss, per-slot mean loss [K], per-slot greedy hits [K], per-slot counts [K])."""
    K = model.config.num_slots
    valid = batch.targets >= 0
    logits = model.draft_logits(states[valid]).float()
    scale = temperature_scale(batch.temperature)[:, None].expand_as(batch.targets)[valid]
    log_q = (logits / scale[:, None]).log_softmax(-1)
    targets, slot = batch.targets[valid], batch.slot[valid]
    if args.loss == "kl":
        teacher = ((batch.teacher_final[valid] @ teacher_head.T) / scale[:, None]).log_softmax(-1)
        per_row = (teacher.exp() * (teacher - log_q)).sum(-1)
    else:
        per_row = -log_q.gather(1, targets[:, None])[:, 0]
    weights = args.gamma ** slot.float()
    loss = (per_row * weights).sum() / weights.sum().clamp(min=1e-6)
    hits = (logits.argmax(-1) == targets).float()
    per_slot = torch.zeros(K, device=logits.device).index_add_(0, slot, per_row.detach())
    hit_slot = torch.zeros(K, device=logits.device).index_add_(0, slot, hits)
    count = torch.zeros(K, device=logits.device).index_add_(0, slot, torch.ones_like(hits))
    return loss, per_slot, hit_slot, count


def train_ptp(args: PTPTrainArgs) -> Path:
    args.check()
    kind = PTP_TYPE if args.conditioning else PEAGLE_TYPE

    def states(model: PTPDraft, batch: Batch, teacher_head: torch.Tensor, g: torch.Generator,
               evaluating: bool) -> torch.Tensor:
        u = draw_u(model, batch, teacher_head, "teacher" if evaluating else args.u_source, g)
        return forward(model, batch, u)

    name = f"{kind} {args.u_embedding}" if kind == PTP_TYPE else kind
    return train_slot_draft(args, {"speculators_type": kind, "u_embedding": args.u_embedding,
                                   "u_features": args.u_features}, states, model_card,
                            f"train {name} K={args.slots}")


def train_slot_draft(args: SlotTrainArgs, config_fields: dict, states, card, desc: str) -> Path:
    """Build the draft (PTPConfig + `config_fields`: speculators_type, u options), train it, export it.
    `states(model, batch, teacher_head, g, evaluating)` -> the normed states of the batch rows [B, C+M, H];
    `card(args, config, final, coverage, data)` -> the model card."""
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    embed, lm_head, verifier = load_target_head(args.target)
    if config_fields["speculators_type"] != PTP_TYPE:
        # vLLM serves its own types from the draft folder alone (`vllm serve DRAFT`), loading this as the target
        verifier["name_or_path"] = str(Path(args.target).resolve()) if Path(args.target).is_dir() else args.target
    from transformers import AutoConfig
    target_config = AutoConfig.from_pretrained(args.target)
    data = load_ptp_teacher_data(args.data_dir)
    V, H = embed.shape
    draft_vocab, coverage = data.draft_vocabulary(V, args.draft_vocab_size)
    to_draft = torch.full((V,), -1, dtype=torch.long)
    to_draft[draft_vocab] = torch.arange(len(draft_vocab))
    rope = getattr(target_config, "rope_parameters", None) or {}
    config = PTPConfig(
        hidden_size=H, vocab_size=V, draft_vocab_size=len(draft_vocab), num_slots=args.slots,
        aux_layer_ids=list(data.aux_layers), mask_token_id=int(getattr(target_config, "pad_token_id", None) or 0),
        num_hidden_layers=args.layers, num_attention_heads=target_config.num_attention_heads,
        num_key_value_heads=target_config.num_key_value_heads,
        head_dim=getattr(target_config, "head_dim", None) or H // target_config.num_attention_heads,
        intermediate_size=target_config.intermediate_size, rms_norm_eps=float(target_config.rms_norm_eps),
        rope_theta=float(rope.get("rope_theta", getattr(target_config, "rope_theta", 10000.0))),
        max_position_embeddings=target_config.max_position_embeddings, verifier=verifier, **config_fields)
    model = PTPDraft(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and name.startswith(("fc", "layers")):
                p.normal_(0, 0.02)
    model.attach_target(embed, lm_head, draft_vocab)
    model.to(device)
    model.embed = embed.to(device)
    teacher_head = lm_head[draft_vocab].to(device)
    examples = PTPExamples(data, to_draft, args)

    train_seq, eval_seq = data.split(args.eval_fraction, args.seed, args.eval_max_sequences)
    trainable = [p for p in model.parameters() if p.requires_grad]
    warmup = max(1, min(100, args.steps // 10))
    optimizer, schedule = make_optimizer(trainable, args.lr, args.steps, warmup)
    step = resume(out, model, optimizer, schedule)
    if step == 0 and args.init_from:
        warm_start(model, Path(args.init_from))
    acceptance_data = held_out_acceptance_data(args, config)

    def train_step(done: int, g: torch.Generator):
        chosen = train_seq[distributed.share(torch.randint(len(train_seq), (args.batch_size,), generator=g))]
        batch = examples.batch(chosen, g, device)
        loss, per_slot, _, count = losses(model, batch, states(model, batch, teacher_head, g, False), teacher_head,
                                          args)
        weight = (args.gamma ** torch.arange(len(count), device=count.device) * count).sum()
        loss = loss * weight / distributed.global_count(weight).clamp(min=1e-6)  # DDP: the whole batch's mean
        return loss, {"epochs": round(done * args.batch_size / len(train_seq), 3),
                      "anchors_seen": done * args.batch_size * args.anchors,
                      "train_loss": round(loss.item(), 4),
                      "train_loss_per_slot": [round(x, 3) for x in (per_slot / count.clamp(min=1)).tolist()]}

    best = best_score(out)

    def at_save(step: int, record: dict) -> float:
        nonlocal best
        if acceptance_data is not None:
            acceptance = held_out_acceptance(model, acceptance_data, lm_head, config.num_slots)
            record["acceptance"] = acceptance
            score = mean_acceptance_length(acceptance)
            if score > best:  # the checkpoint that ships is the best by held-out acceptance, not the last
                best = score
                record["exported"] = True
                export(out, model, config, card(args, config, record, coverage, data))
        return best

    step = run_steps(out, model, trainable, optimizer, schedule, args, step, desc, train_step,
                     lambda: evaluate(model, examples, eval_seq, teacher_head, args, device, states), at_save, best)
    if acceptance_data is None and step >= args.steps and distributed.is_main():
        final = evaluate(model, examples, eval_seq, teacher_head, args, device, states)
        export(out, model, config, card(args, config, {**final, "step": step}, coverage, data))
    return out


def warm_start(model: PTPDraft, draft: Path) -> None:
    """Start from another run's exported weights, or one clear error. The frozen LM head and the draft vocabulary
    stay this run's (the target's rows for this teacher data's vocabulary), so a draft moves to more data whose
    vocabulary differs. A shallower draft grows: the layers it lacks start with zero output projections, so the grown
    draft first computes exactly what the shallower one did and the added layers learn a correction to it."""
    own = model.state_dict()
    source_layers = PTPConfig.from_checkpoint(draft).num_hidden_layers
    if source_layers > len(model.layers):
        raise CheckpointError(f"--init-from {draft}: config.json field 'num_hidden_layers' is {source_layers}, "
                              f"more than this run's --layers {len(model.layers)}")
    added = tuple(f"layers.{i}." for i in range(source_layers, len(model.layers)))
    this_runs = ("lm_head.weight", "d2t")
    expected = {k: v for k, v in own.items() if not k.startswith(added)}
    weights = load_matching_weights(draft, expected, ignore=this_runs)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items() if k not in this_runs}, strict=False)
    with torch.no_grad():
        for layer in model.layers[source_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def export(out: Path, model: PTPDraft, config: PTPConfig, card_text: str) -> None:
    shipped = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(out, config.to_json(), shipped, card_text)


def held_out_acceptance_data(args: SlotTrainArgs, config: PTPConfig):
    """The held-out teacher folder the checkpoint is selected on (None: none given, or a sequential draft)."""
    if not args.eval_dir or not config.parallel:
        return None
    data = load_ptp_teacher_data(args.eval_dir)
    if list(data.aux_layers) != list(config.aux_layer_ids):
        raise ValueError(f"{args.eval_dir}/meta.json: auxiliary layers {data.aux_layers}, the draft reads "
                         f"{config.aux_layer_ids}")
    return data


@torch.no_grad()
def held_out_acceptance(model: PTPDraft, data, lm_head: torch.Tensor, k: int) -> dict:
    """The offline evaluator's figures (vllm_ptp.training.acceptance) on the held-out teacher sequences."""
    model.eval()
    return {name: result.summary() for name, result in
            draft_acceptance(model, teacher_sequences(data), lm_head, k).items()}


def mean_acceptance_length(acceptance: dict) -> float:
    return sum(a["acceptance_length"] for a in acceptance.values()) / max(len(acceptance), 1)


def best_score(out: Path) -> float:
    state = out / STATE_DIR / "train_state.json"
    return (json.loads(state.read_text()).get("best") or 0.0) if state.exists() else 0.0


@torch.no_grad()
def evaluate(model: PTPDraft, examples: PTPExamples, sequences: torch.Tensor, teacher_head: torch.Tensor,
             args: SlotTrainArgs, device, states) -> dict:
    """Held-out loss and top-1 accuracy per slot (for PTP with u drawn from the teacher's interval); overall and
    split into greedy (T = 0) and sampled teacher sequences."""
    model.eval()
    K = model.config.num_slots
    greedy = examples.data.temperatures[sequences] <= 0
    out = {}
    for name, group in (("", sequences), ("_greedy", sequences[greedy]), ("_sampled", sequences[~greedy])):
        g = torch.Generator().manual_seed(12345)
        total, hits, counts = torch.zeros(K), torch.zeros(K), torch.zeros(K)
        for i in range(0, len(group), args.batch_size):
            batch = examples.batch(group[i:i + args.batch_size], g, device)
            _, per_slot, hit, count = losses(model, batch, states(model, batch, teacher_head, g, True), teacher_head,
                                             args)
            total += per_slot.cpu()
            hits += hit.cpu()
            counts += count.cpu()
        out[f"eval_loss_per_slot{name}"] = [round(x, 4) for x in (total / counts.clamp(min=1)).tolist()]
        out[f"eval_top1_per_slot{name}"] = [round(x, 4) for x in (hits / counts.clamp(min=1)).tolist()]
    return out


def model_card(args: PTPTrainArgs, config: PTPConfig, final: dict, coverage: float, data: PTPTeacherData) -> str:
    K = config.num_slots
    if not config.conditioned:
        return (f"# P-EAGLE draft (EAGLE-3 + parallel drafting, speculators type `peagle`), {K} slots\n\n"
                f"The PTP draft without its conditioning (no u, no temperature embedding): the baseline that isolates "
                f"the u's. It drafts up to {K} tokens per step from one forward pass.\n\n"
                f"{vllm_serving(config, parallel=True)}\n"
                + card_details(args, config, final, coverage, data,
                               f"{K - 1} mask slots (`mask_hidden`, mask token {config.mask_token_id})", ""))
    kind = ("independent parallel prediction (no u; the ablation)" if not config.uses_u
            else f"PTP with `{config.u_embedding}` u-embedding")
    u_source = "teacher" if args.u_source == "teacher" else "draft's own"
    return f"""# PTP draft: {kind}, {K} slots

Draft for `{config.verifier.get('name_or_path')}` served by vLLM with vllm-ptp:
`--speculative-config '{{"model": "<this folder>"}}'` (method "ptp" is detected from config.json), drafting up to
{K} tokens per step from one forward pass.

""" + card_details(args, config, final, coverage, data, f"{K - 1} mask slots carrying u and the temperature",
                   f", u from the {u_source} CDF interval (z ~ Beta({BETA}, {BETA}))")


def vllm_serving(config: PTPConfig, parallel: bool) -> str:
    """How an unmodified vLLM (0.32) serves a draft of its own speculators types."""
    method = '"method": "eagle3"' + (', "parallel_drafting": true' if parallel else "")
    target = config.verifier.get("name_or_path")
    return f"""Loads in an unmodified vLLM (vllm-ptp not needed): `vllm serve <this folder>` (or
`LLM(model="<this folder>")`) takes the target from `speculators_config.verifier.name_or_path` (`{target}`)
and sets up `eagle3`{' with `parallel_drafting`' if parallel else ''} and k = {config.num_slots} from config.json.
With the target given separately: `--speculative-config '{{"model": "<this folder>", {method},
"num_speculative_tokens": {config.num_slots}}}'`. Keep "method": vLLM 0.32 does not read it from a folder given there
(it guesses from the path: "eagle3" in it gives sequential eagle3, anything else a standalone draft model, which
fails at the first draft).
"""


def card_details(args: SlotTrainArgs, config: PTPConfig, final: dict, coverage: float, data: PTPTeacherData,
                 slots: str, training: str) -> str:
    """The architecture / training / held-out part of every EAGLE-3-layout model card."""
    return f"""- Architecture: vLLM's EAGLE-3 draft layout ({config.num_hidden_layers} decoder layer(s) over fc(target
  layers {config.aux_layer_ids}) + token embedding), {slots}. The
  target's embedding is shared; the LM head is the target's rows for the {config.draft_vocab_size} most frequent
  teacher tokens ({coverage:.1%} of teacher completion tokens), frozen.
- Training: {args.loss.upper()} loss{training}, gamma {args.gamma}; step {final['step']} of {args.steps} x {args.batch_size} sequences
  (window {args.window}, {args.anchors} anchors), AdamW lr {args.lr}, seed {args.seed}, on {data.num_sequences}
  teacher sequences from `{args.data_dir}` (temperatures {sorted({round(t, 3) for t in data.temperatures.tolist()})}).
- Held-out (whole sequences): loss per slot {final['eval_loss_per_slot']}, top-1 per slot
  {final['eval_top1_per_slot']} (greedy teacher sequences {final['eval_top1_per_slot_greedy']}, sampled
  {final['eval_top1_per_slot_sampled']}).
{acceptance_lines(final.get("acceptance"), args.eval_dir)}
Command: `{args.command}`
"""


def acceptance_lines(acceptance: dict | None, eval_dir: str | None) -> str:
    if not acceptance:
        return ""
    lines = [f"- Offline acceptance on the held-out teacher sequences of `{eval_dir}` (the checkpoint shipped is the "
             f"best by mean acceptance length):"]
    lines += [f"  - {name}: acceptance length {a['acceptance_length']}, per position {a['per_position']}"
              for name, a in acceptance.items()]
    return "\n".join(lines) + "\n"
