"""Offline acceptance of a parallel draft (PTP, its independent ablation, P-EAGLE): what vLLM's verification would
accept at each draft position, computed on the target's own continuations without running vLLM.

For every anchor t of a teacher sequence z (the step that has just sampled z_{t+1}), the draft proposes K tokens from
one forward pass (its context slots over the target's states at 0..t, then K-1 mask slots), exactly as vLLM's
parallel drafting lays it out. Position j compares the draft's distribution q_j with the target's p_j (the
teacher's distribution predicting z_{t+1+j}, at the sequence's temperature):

- T = 0: the draft token is argmax q_j (mask slots carry u = 1/2, as served), and it is accepted iff it equals the
  target's greedy token z_{t+1+j}. The chain acceptance of position j is the product of matches up to j.
- T > 0: vLLM accepts a draft token d ~ q_j with probability min(1, p_j(d) / q_j(d)); that accepts with probability
  alpha_j = sum min(p_j, q_j), and an accepted token is distributed min(p_j, q_j) / alpha_j. The teacher's token z
  is a sample of p_j, so weighting it by min(1, q_j(z) / p_j(z)) turns it into a sample of the accepted token:
  E[positions 1..j accepted] = E_z[alpha_j * prod_{i<j} min(1, q_i(z_i) / p_i(z_i))], unbiased. Mask slot i carries
  u_i uniform in q_i's CDF interval of z_i (what a u that picked z_i looks like), so q_{i+1} is the draft's
  conditional given that token: this takes one forward pass per position.

The mean of the chain over anchors is vLLM's `accepted_per_pos / num_drafts` for a draft at every position; on greedy
sequences `greedy_steps` also walks the sequence as vLLM does (the next step starts after the accepted tokens and
the bonus token), which is the figure vLLM reports for the same requests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_ptp.kernels import cdf_interval
from vllm_ptp.models.ptp_draft import PTPDraft

GREEDY_U = 0.5  # what the served draft's mask slots carry for greedy requests


@dataclass
class TeacherSequence:
    tokens: torch.Tensor   # [L] prompt + continuation
    prompt_len: int
    temperature: float
    aux: torch.Tensor      # [L, n_aux, H] the target's states entering the draft's auxiliary layers
    final: torch.Tensor    # [L, H] its final normed states
    served_tokens: int | None = None  # greedy walk: the request's max_tokens if the sequence runs past it


@dataclass
class Acceptance:
    """Sums over anchors; `per_position` and `acceptance_length` are the means."""
    k: int
    chain: torch.Tensor = None      # [k] sum over anchors of P(positions 1..j accepted)
    anchors: torch.Tensor = None    # [k] anchors at which position j had a target token
    steps: int = 0                  # greedy walk: draft steps
    step_accepted: torch.Tensor = None  # [k] greedy walk: steps whose first j drafts were accepted
    sequences: int = 0
    # min_draft_confidence C -> [positions verified, expected positions accepted], summed over anchors
    cuts: dict = None

    def __post_init__(self):
        for name in ("chain", "anchors", "step_accepted"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(self.k, dtype=torch.float64))
        self.cuts = self.cuts or {}

    def add(self, other: "Acceptance") -> None:
        self.chain += other.chain
        self.anchors += other.anchors
        self.steps += other.steps
        self.step_accepted += other.step_accepted
        self.sequences += other.sequences
        for threshold, sums in other.cuts.items():
            mine = self.cuts.setdefault(threshold, [0.0, 0.0])
            mine[0], mine[1] = mine[0] + sums[0], mine[1] + sums[1]

    @property
    def per_position(self) -> list[float]:
        return (self.chain / self.anchors.clamp(min=1)).tolist()

    @property
    def acceptance_length(self) -> float:
        return 1 + sum(self.per_position)

    @property
    def greedy_steps(self) -> list[float]:
        return (self.step_accepted / max(self.steps, 1)).tolist()

    def summary(self) -> dict:
        out = {"per_position": [round(x, 4) for x in self.per_position],
               "acceptance_length": round(self.acceptance_length, 4), "anchors": int(self.anchors[0]),
               "sequences": self.sequences}
        if self.steps:
            out |= {"greedy_steps_per_position": [round(x, 4) for x in self.greedy_steps],
                    "greedy_steps_acceptance_length": round(1 + sum(self.greedy_steps), 4), "steps": self.steps}
        if self.cuts:
            n = max(float(self.anchors[0]), 1.0)
            out["min_draft_confidence"] = {
                f"{c:g}": {"verified_per_step": round(v / n, 4), "accepted_per_step": round(a / n, 4)}
                for c, (v, a) in sorted(self.cuts.items())}
            out["min_draft_confidence"]["none"] = {"verified_per_step": round(float(self.anchors.sum()) / n, 4),
                                                   "accepted_per_step": round(float(self.chain.sum()) / n, 4)}
        return out


@torch.no_grad()
def sequence_acceptance(draft: PTPDraft, seq: TeacherSequence, lm_head: torch.Tensor, k: int,
                        thresholds: tuple[float, ...] = ()) -> Acceptance:
    """Acceptance of every anchor of one sequence (see the module docstring). lm_head: the target's [V, H].
    thresholds: values of speculative_config.min_draft_confidence to score as well (positions verified and expected
    accepted per step when each row stops at its first position with c_1 * ... * c_j below the threshold)."""
    result = Acceptance(k=k, sequences=1)
    chain, exists, anchors, accepted, top = _chains(draft, seq, lm_head, k)
    if len(anchors) == 0:
        return result
    result.chain = chain.sum(0).cpu()
    result.anchors = exists.double().sum(0).cpu()
    chained = top.double().cumprod(-1)
    for threshold in thresholds:
        kept = (chained >= threshold) & exists
        result.cuts[threshold] = [float(kept.sum()), float((chain * kept).sum())]
    if accepted is not None:
        walk(result, accepted.cpu(), anchors.cpu(), seq.prompt_len, len(seq.tokens), seq.served_tokens)
    return result


def anchor_chains(draft: PTPDraft, seq: TeacherSequence, lm_head: torch.Tensor, k: int):
    """-> (chain [A, k]: P(positions 1..j accepted) at each anchor, exists [A, k]: position j has a target token,
    anchors [A], accepted [A, k] greedy matches or None at T > 0)."""
    return _chains(draft, seq, lm_head, k)[:4]


@torch.no_grad()
def _chains(draft: PTPDraft, seq: TeacherSequence, lm_head: torch.Tensor, k: int):
    """anchor_chains, plus the draft's top probability in each slot [A, k] (at the sequence's temperature; at 1 for
    greedy sequences), as vLLM's min_draft_confidence reads it."""
    if not 1 <= k <= draft.config.num_slots:
        raise ValueError(f"k must be in 1..{draft.config.num_slots} (the draft's slots), got {k}")
    device = draft.fc.weight.device
    z = seq.tokens.long().to(device)
    L, P = len(z), seq.prompt_len
    anchors = torch.arange(max(P - 1, 0), L - 2, device=device)  # z_{t+1} sampled, z_{t+2} exists
    if len(anchors) == 0:
        empty = torch.zeros(0, k, device=device)
        return empty.double(), empty.bool(), anchors, None, empty
    A = len(anchors)
    j = torch.arange(1, k + 1, device=device)
    later = anchors[:, None] + 1 + j[None]                       # [A, k] index of the target token at position j
    exists = later <= L - 1
    x = z[later.clamp(max=L - 1)]
    greedy = seq.temperature <= 0
    T = 1.0 if greedy else float(seq.temperature)
    d2t = draft.draft_to_target()
    to_draft = torch.full((lm_head.shape[0],), -1, dtype=torch.long, device=device)
    to_draft[d2t] = torch.arange(len(d2t), device=device)
    x_draft = to_draft[x]                                         # [A, k], -1 outside the draft vocabulary

    u = torch.full((A, k - 1), GREEDY_U, device=device)
    g = torch.Generator(device=device).manual_seed(len(z))  # reproducible figures for the same sequence
    passes = 1 if greedy or not draft.config.uses_u else k
    for m in range(passes):
        logits = parallel_draft_logits(draft, seq.aux.to(device), z, anchors, u, seq.temperature, k)
        if m < k - 1 and passes > 1:  # u_{m+1}: uniform in q_{m+1}'s interval of the teacher's token there
            rows = logits[:, m].float()
            safe = x_draft[:, m].clamp(min=0)
            left, right = cdf_interval(rows, torch.full((A,), T, device=device), None, None, safe, check=False)
            inside = left + torch.rand(A, device=device, generator=g) * (right - left)
            u[:, m] = torch.where(x_draft[:, m] >= 0, inside.clamp(0, 1 - 2 ** -24),
                                  torch.rand(A, device=device, generator=g))
    q = (logits.float() / T).softmax(-1)                          # [A, k, Vd]
    top = q.amax(-1)
    if greedy:
        accepted = (d2t[logits.argmax(-1)] == x) & exists
        return accepted.double().cumprod(-1), exists, anchors, accepted, top
    p_log = ((seq.final.to(device).float()[(later - 1).clamp(max=L - 1)] @ lm_head.to(device).float().T) / T
             ).log_softmax(-1)                                    # [A, k, V] the target's processed distribution
    alpha = torch.minimum(p_log.exp()[..., d2t], q).sum(-1)
    q_x = torch.where(x_draft >= 0, q.gather(-1, x_draft.clamp(min=0)[..., None])[..., 0], torch.zeros_like(alpha))
    p_x = p_log.gather(-1, x[..., None])[..., 0].exp()
    weight = torch.minimum(torch.ones_like(q_x), q_x / p_x.clamp(min=1e-30))
    before = torch.cat([torch.ones_like(weight[:, :1]), weight[:, :-1]], dim=1).double().cumprod(-1)
    return alpha.double() * before * exists, exists, anchors, None, top


def walk(result: Acceptance, accepted: torch.Tensor, anchors: torch.Tensor, P: int, L: int,
         served_tokens: int | None) -> None:
    """vLLM's greedy steps along the sequence: a step at anchor t accepts the leading matches a, and the next step
    is at t + a + 1; a request stops once it has `served_tokens` output tokens (or at the sequence's end)."""
    served = L - P if served_tokens is None else served_tokens
    leading = accepted.long().cumprod(-1).sum(-1)
    t = P - 1
    first = int(anchors[0]) if len(anchors) else L
    while t + 2 - P < served and t + 1 < L - 1 and t - first < len(anchors):
        a = int(leading[t - first])
        result.steps += 1
        result.step_accepted[:a] += 1
        t += a + 1


def parallel_draft_logits(draft: PTPDraft, aux: torch.Tensor, z: torch.Tensor, anchors: torch.Tensor,
                          u: torch.Tensor, temperature: float, k: int) -> torch.Tensor:
    """One forward over context slots 0..max(anchors) and k-1 mask slots per anchor -> draft logits [A, k, Vd]:
    slot 0 is the anchor's context slot, slot m its m-th mask slot (carrying u[:, m-1])."""
    device = aux.device
    C, A = int(anchors.max()) + 1, len(anchors)
    ctx = torch.arange(C, device=device)
    m = torch.arange(1, k, device=device)
    anchor_of = torch.arange(A, device=device).repeat_interleave(k - 1)
    slot_of = m.repeat(A)
    M = A * (k - 1)
    allowed = torch.zeros(C + M, C + M, dtype=torch.bool, device=device)
    allowed[:C, :C] = torch.ones(C, C, dtype=torch.bool, device=device).tril()
    allowed[C:, :C] = ctx[None] <= anchors[anchor_of][:, None]
    allowed[C:, C:] = (anchor_of[:, None] == anchor_of[None]) & (slot_of[None] <= slot_of[:, None])
    dtype = draft.fc.weight.dtype
    mask_inputs = draft.mask_rows(u.reshape(1, -1).to(dtype), torch.tensor([temperature], device=device))[0] \
        if M else draft.fc.weight.new_zeros(0, draft.config.hidden_size)
    hidden = torch.cat([draft.fc(aux[:C].flatten(1).to(dtype)), mask_inputs])
    tokens = torch.cat([z[ctx + 1], torch.full((M,), draft.config.mask_token_id, device=device)])
    positions = torch.cat([ctx, anchors[anchor_of] + slot_of])
    states = draft(hidden[None], tokens[None], positions[None], allowed[None])[0]
    rows = torch.cat([anchors[:, None], C + torch.arange(M, device=device).view(A, k - 1)], dim=1)
    return draft.draft_logits(states[rows])


def draft_acceptance(draft: PTPDraft, sequences, lm_head: torch.Tensor, k: int,
                     thresholds: tuple[float, ...] = ()) -> dict[str, Acceptance]:
    """Acceptance over sequences, split by temperature: {"T=0": ..., "T=1": ...} (keys as f"T={t:g}")."""
    by_temperature: dict[str, Acceptance] = {}
    for seq in sequences:
        key = f"T={seq.temperature:g}"
        by_temperature.setdefault(key, Acceptance(k=k)).add(sequence_acceptance(draft, seq, lm_head, k, thresholds))
    return dict(sorted(by_temperature.items()))


def teacher_sequences(data, indices=None, max_tokens: int | None = None):
    """TeacherSequence views of a PTPTeacherData (all sequences, or `indices`), read one at a time; `max_tokens`
    cuts each continuation (cheaper evaluation)."""
    for s in range(data.num_sequences) if indices is None else indices:
        s = int(s)
        start, end, P = int(data.starts[s]), int(data.starts[s + 1]), int(data.prompt_lens[s])
        end = end if max_tokens is None else min(end, start + P + max_tokens)
        aux, final = data.states.sequence(s)
        n = end - start
        yield TeacherSequence(tokens=data.tokens[start:end], prompt_len=P, temperature=float(data.temperatures[s]),
                              aux=aux[:n], final=final[:n])
