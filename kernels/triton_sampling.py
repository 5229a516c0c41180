"""Triton kernels for auxiliary-variable sampling: the GPU path behind `vllm_ptp.kernels`.

Semantics are those of `vllm_ptp.kernels.reference` (the oracle the tests hold these to):

* Every call is spread over an (N, S) grid of row chunks, so the whole GPU works even for N = 1. The first kernel
  writes each chunk's raw max, its first index (the greedy token is the first raw maximum) and its online softmax
  normaliser (running max + rescaled sum) of the scaled logits, which NaN or +inf logits turn into NaN: such rows (and
  rows without a finite logit) give token -1 / probability NaN. Without top-k / top-p that is the only full read:
  one program per row combines the chunk statistics into the chunk boundaries B_s (every program with the same
  arithmetic) and walks only the chunk that holds u (or the token); the probabilities, when asked for, are written
  by an (N, S) grid. See `_split_walk_kernel` for the exact interval rule at chunk edges.
* top-k / top-p are cut at a threshold *value*, found exactly by a (NPROBE+1)-ary search on the float32 bit pattern
  mapped to an ordered integer key (-0.0 mapped to 0.0; the search ends on a representable value). Each pass tries
  NPROBE candidate keys at once: every (row, chunk) program counts (top-k) or weighs (top-p) its chunk's tokens
  above each candidate, and one program per row sums the chunk shares and narrows the range; `search_passes(16)` = 8
  passes cover the 2^32 keys (the interpreter uses more probes per pass, fewer passes; the result is the same). top-k
  keeps x with #{x_j > x} < k (= every x >= the k-th largest, ties kept, as `torch.topk` + `<` in the reference);
  top-p keeps x with sum_{x_j > x, kept by top-k} exp(x_j - m) < p * Z_k (= the smallest most-likely set reaching
  p, plus ties with its least likely member, as the reference). Each cut then writes its chunks' kept masses, which
  the walk combines instead of the normalisers.
* `cdf_interval` runs the same code (one kernel, MODE constexpr) so its boundaries are bit-exact with the pick: the
  walk compares cn(i) = C(i) * (1/Z) > u over tokens with nonzero probability, C the running block cumsum; the
  interval of t is [max_{j<t, p_j>0} cn(j), cn(t)), the last nonzero token's right end is 1, and a u that rounding
  lets walk past the end takes the last nonzero token. So pick(u) == t exactly for every float32 u in the interval.

The kernels and their helpers are `triton.jit` functions: Triton's CPU interpreter runs them only when
TRITON_INTERPRET=1 is set before triton is first imported (the tests run them in a fresh interpreter for that).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

NPROBE = 16
_KEY_BELOW_ALL = -(2 ** 31) - 1  # below the ordered key of every float32
KEY_BELOW_ALL: tl.constexpr = tl.constexpr(_KEY_BELOW_ALL)

# Reductions and scans go through tl.reduce / tl.associative_scan with triton's own combine functions rather than
# tl.sum & co.: those are jit functions, which an interpreted kernel cannot call when triton was imported before
# TRITON_INTERPRET was set, while the interpreter maps these combine functions to numpy (fast, too).
_SUM = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min
_ARGMAX = tl.standard._argmax_combine_tie_break_left  # (value, index): the first maximum


@triton.jit
def _ordered_key(x):
    """float32 -> int64 key with the floats' order (-0.0 mapped to 0.0): the threshold searches run over keys."""
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(x == 0.0, 0, tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)).to(tl.int64)


@triton.jit
def _scaled(base, idx, mask, scale):
    """The row's logits at idx (-inf where masked) over the temperature scale, float32, rounded to nearest."""
    raw = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
    return tl.math.div_rn(raw, scale)


@triton.jit
def _row_stats(base, start, stop, V, scale, BLOCK: tl.constexpr):
    """Logits [start, stop) of a row -> (raw max, its first index, online softmax normaliser of the scaled logits
    relative to the scaled max). NaN or +inf logits make the normaliser NaN."""
    offs = tl.arange(0, BLOCK)
    neg_inf = float("-inf")
    mraw = tl.full([], neg_inf, tl.float32)
    amax = tl.full([], 0, tl.int32)
    z = tl.full([], 0, tl.float32)
    for b in range(start, stop, BLOCK):
        idx = b + offs
        raw = tl.load(base + idx, mask=idx < V, other=neg_inf).to(tl.float32)
        bmax, barg = tl.reduce((raw, offs), 0, _ARGMAX)
        amax = tl.where(bmax > mraw, b + barg, amax)
        mnew = tl.maximum(mraw, bmax)
        ref_old = tl.math.div_rn(mraw, scale)
        ref_new = tl.math.div_rn(mnew, scale)
        ref_new = tl.where(ref_new == neg_inf, 0.0, ref_new)
        x = tl.math.div_rn(raw, scale)
        z = z * tl.exp(ref_old - ref_new) + tl.reduce(tl.exp(x - ref_new), 0, _SUM)
        mraw = mnew
    return mraw, amax, z


@triton.jit
def _masses(base, idx, end, load_limit, scale, m, thr, greedy, amax):
    """Unnormalised processed probabilities of the tokens idx (< end): exp(x - m) where kept by thr; greedy rows
    one-hot at amax (their logits are not read: load_limit 0)."""
    x = _scaled(base, idx, (idx < end) & (idx < load_limit), scale)
    e = tl.where((idx < end) & (_ordered_key(x) >= thr), tl.exp(x - m), 0.0)
    return tl.where(greedy, tl.where(idx == amax, 1.0, 0.0), e)


@triton.jit
def _walk_to_u(base, start, end, load_limit, scale, m, thr, greedy, amax, run, r, u, V, probs_row,
               WRITE_PROBS: tl.constexpr, BLOCK: tl.constexpr):
    """The CDF walk in token-id order over [start, end), from the mass `run` before start: cn(i) = C(i) / Z with
    C the running cumsum -> (first nonzero token with cn > u, or V; last nonzero token seen, or -1). With
    WRITE_PROBS it goes on to the end, writing the probabilities to probs_row."""
    offs = tl.arange(0, BLOCK)
    found = tl.full([], V, tl.int32)
    lastpos = tl.full([], -1, tl.int32)
    while (start < end) & ((found == V) | WRITE_PROBS):
        idx = start + offs
        e = _masses(base, idx, end, load_limit, scale, m, thr, greedy, amax)
        cn = (run + tl.associative_scan(e, 0, _SUM)) * r
        pos = e > 0.0
        found = tl.minimum(found, tl.reduce(tl.where(pos & (cn > u), idx, V), 0, _MIN))
        lastpos = tl.maximum(lastpos, tl.reduce(tl.where(pos, idx, -1), 0, _MAX))
        if WRITE_PROBS:
            tl.store(probs_row + idx, e * r, mask=idx < end)
        run += tl.reduce(e, 0, _SUM)
        start += BLOCK
    return found, lastpos


@triton.jit
def _walk_to_token(base, start, end, load_limit, scale, m, thr, greedy, amax, run, r, t, left,
                   BLOCK: tl.constexpr):
    """The same walk up to token t -> (left end of t's interval: the largest cn of a nonzero token before t, from
    `left`; cn(t); last nonzero token seen). Stops once a nonzero token beyond t was seen: t is then not the last
    one, and every token up to t is done."""
    offs = tl.arange(0, BLOCK)
    cn_t = tl.full([], 0, tl.float32)
    lastpos = tl.full([], -1, tl.int32)
    while (start < end) & (lastpos <= t):
        idx = start + offs
        e = _masses(base, idx, end, load_limit, scale, m, thr, greedy, amax)
        cn = (run + tl.associative_scan(e, 0, _SUM)) * r
        pos = e > 0.0
        left = tl.maximum(left, tl.reduce(tl.where(pos & (idx < t), cn, 0.0), 0, _MAX))
        cn_t += tl.reduce(tl.where(idx == t, cn, 0.0), 0, _SUM)
        lastpos = tl.maximum(lastpos, tl.reduce(tl.where(pos, idx, -1), 0, _MAX))
        run += tl.reduce(e, 0, _SUM)
        start += BLOCK
    return left, cn_t, lastpos


@triton.jit
def _split_stats_kernel(logits_ptr, stride_row, temp_ptr, mraw_ptr, arg_ptr, z_ptr, V, S,
                        CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (N, S): raw max, its first index and the softmax normaliser (relative to the chunk's own scaled max) of
    chunk s = [s * CHUNK, (s + 1) * CHUNK) of the row, written to [N, S] buffers."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    temp = tl.load(temp_ptr + row).to(tl.float32)
    scale = tl.where(temp <= 0.0, 1.0, temp)
    mraw, amax, z = _row_stats(logits_ptr + row * stride_row, s * CHUNK, s * CHUNK + CHUNK, V, scale, BLOCK)
    tl.store(mraw_ptr + row * S + s, mraw)
    tl.store(arg_ptr + row * S + s, amax)
    tl.store(z_ptr + row * S + s, z)


@triton.jit
def _probe_keys(lo, hi, NPROBE: tl.constexpr):
    """NPROBE candidate keys spread evenly over the open range (lo, hi) (lo itself is never a candidate: the answer
    lies above it)."""
    jj = tl.arange(0, NPROBE).to(tl.int64)
    return tl.maximum(lo + ((hi - lo) * (jj + 1)) // (NPROBE + 1), lo + 1)


@triton.jit
def _chunk_masses(mraw_ptr, arg_ptr, z_ptr, row, S, V, scale, S_PAD: tl.constexpr):
    """A row's chunk statistics combined -> (raw max, its first index, scaled max m, each chunk's softmax mass
    relative to m [S_PAD], 0 past S). Every kernel that needs them runs this same arithmetic: they agree bit for bit."""
    sidx = tl.arange(0, S_PAD)
    smask = sidx < S
    mr = tl.load(mraw_ptr + row * S + sidx, mask=smask, other=float("-inf"))
    ar = tl.load(arg_ptr + row * S + sidx, mask=smask, other=V)
    zs = tl.load(z_ptr + row * S + sidx, mask=smask, other=0.0)
    mraw = tl.reduce(mr, 0, _MAX)
    amax = tl.reduce(tl.where(mr == mraw, ar, V), 0, _MIN)
    m = tl.math.div_rn(mraw, scale)
    return mraw, amax, m, tl.where(smask, zs * tl.exp(tl.math.div_rn(mr, scale) - m), 0.0)


@triton.jit
def _cut_setup_kernel(temp_ptr, cut_ptr, mraw_ptr, arg_ptr, z_ptr, kept_ptr, m_ptr, thr_ptr, lo_ptr, hi_ptr,
                      bound_ptr, V, S, TOP_P: tl.constexpr, KEPT: tl.constexpr, S_PAD: tl.constexpr):
    """Grid (N,): the key range (lo, hi] and the bound of one cut's search, and the row's scaled max m.
    Top-k (cut k): bound k. Top-p (cut p): bound p * Z_kept, Z_kept the row's mass kept by the previous cut (kept_ptr,
    with KEPT) or all of it. Rows without this cut (greedy, bad, k off, p off) get (thr - 1, thr]: nothing to search."""
    row = tl.program_id(0).to(tl.int64)
    temp = tl.load(temp_ptr + row).to(tl.float32)
    greedy = temp <= 0.0
    mraw, amax, m, mass = _chunk_masses(mraw_ptr, arg_ptr, z_ptr, row, S, V, tl.where(greedy, 1.0, temp), S_PAD)
    z = tl.reduce(mass, 0, _SUM)
    stochastic = (greedy == 0) & (z == z) & (mraw != float("-inf"))
    thr = tl.load(thr_ptr + row)
    if TOP_P:
        if KEPT:
            sidx = tl.arange(0, S_PAD)
            z = tl.reduce(tl.load(kept_ptr + row * S + sidx, mask=sidx < S, other=0.0), 0, _SUM)
        p = tl.load(cut_ptr + row).to(tl.float32)
        active = stochastic & (p < 1.0)
        bound = p * z
    else:
        k = tl.load(cut_ptr + row).to(tl.int64)
        active = stochastic & (k > 0) & (k < V)
        bound = k.to(tl.float32)
    tl.store(m_ptr + row, m)
    tl.store(lo_ptr + row, thr - 1)
    tl.store(hi_ptr + row, tl.where(active, _ordered_key(m), thr))
    tl.store(bound_ptr + row, bound)


@triton.jit
def _cut_state(temp_ptr, m_ptr, thr_ptr, row):
    """A row's temperature scale, scaled max and current threshold key, as the cut's setup left them."""
    temp = tl.load(temp_ptr + row).to(tl.float32)
    return tl.where(temp <= 0.0, 1.0, temp), tl.load(m_ptr + row), tl.load(thr_ptr + row)


@triton.jit
def _search_partials_kernel(logits_ptr, stride_row, temp_ptr, m_ptr, thr_ptr, lo_ptr, hi_ptr, g_ptr, V, S,
                            WEIGHTED: tl.constexpr, CHUNK: tl.constexpr, SEARCH_BLOCK: tl.constexpr,
                            NPROBE: tl.constexpr):
    """Grid (N, S): chunk s's share of G(t) at each candidate key t of the row's range, where G(t) sums, over the
    tokens with key > t among those kept by thr, 1 (top-k) or, WEIGHTED, exp(x - m) (top-p)."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    lo = tl.load(lo_ptr + row)
    hi = tl.load(hi_ptr + row)
    G = tl.full([NPROBE], 0.0, tl.float32)
    if hi - lo > 1:
        probes = _probe_keys(lo, hi, NPROBE)
        scale, m, thr = _cut_state(temp_ptr, m_ptr, thr_ptr, row)
        base = logits_ptr + row * stride_row
        soffs = tl.arange(0, SEARCH_BLOCK)
        end = tl.minimum(s * CHUNK + CHUNK, V)
        for b in range(0, CHUNK, SEARCH_BLOCK):
            idx = s * CHUNK + b + soffs
            valid = idx < end
            x = _scaled(base, idx, valid, scale)
            key = _ordered_key(x)
            kept = valid & (key >= thr)
            if WEIGHTED:
                w = tl.where(kept, tl.exp(x - m), 0.0)
            else:
                w = tl.where(kept, 1.0, 0.0)
            G += tl.reduce(tl.where(key[None, :] > probes[:, None], w[None, :], 0.0), 1, _SUM)
    tl.store(g_ptr + (row * S + s) * NPROBE + tl.arange(0, NPROBE), G)


@triton.jit
def _search_update_kernel(g_ptr, lo_ptr, hi_ptr, thr_ptr, bound_ptr, S, NPROBE: tl.constexpr, S_PAD: tl.constexpr):
    """Grid (N,): G at each candidate is the sum of its chunk shares; G falls as t rises, so the answer (the smallest
    t with G(t) < bound) lies between the largest candidate with G >= bound and the smallest with G < bound. Once
    the range holds one key, that key is the row's new thr (every key >= thr is kept)."""
    row = tl.program_id(0).to(tl.int64)
    lo = tl.load(lo_ptr + row)
    hi = tl.load(hi_ptr + row)
    if hi - lo > 1:
        probes = _probe_keys(lo, hi, NPROBE)
        sidx = tl.arange(0, S_PAD)
        jj = tl.arange(0, NPROBE)
        shares = tl.load(g_ptr + (row * S + sidx[:, None]) * NPROBE + jj[None, :], mask=(sidx < S)[:, None],
                         other=0.0)
        ok = tl.reduce(shares, 0, _SUM) < tl.load(bound_ptr + row)
        new_hi = tl.reduce(tl.where(ok, probes, hi), 0, _MIN)
        new_lo = tl.reduce(tl.where(ok, lo, probes), 0, _MAX)
        tl.store(lo_ptr + row, new_lo)
        tl.store(hi_ptr + row, new_hi)
        if new_hi - new_lo <= 1:
            tl.store(thr_ptr + row, new_hi)


@triton.jit
def _kept_mass_kernel(logits_ptr, stride_row, temp_ptr, m_ptr, thr_ptr, kept_ptr, V, S, CHUNK: tl.constexpr,
                      BLOCK: tl.constexpr):
    """Grid (N, S): sum of exp(x - m) over chunk s's tokens with key >= thr: its mass after the cuts, relative to m."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    scale, m, thr = _cut_state(temp_ptr, m_ptr, thr_ptr, row)
    base = logits_ptr + row * stride_row
    offs = tl.arange(0, BLOCK)
    end = tl.minimum(s * CHUNK + CHUNK, V)
    z = tl.full([], 0, tl.float32)
    for b in range(0, CHUNK, BLOCK):
        idx = s * CHUNK + b + offs
        x = _scaled(base, idx, idx < end, scale)
        z += tl.reduce(tl.where((idx < end) & (_ordered_key(x) >= thr), tl.exp(x - m), 0.0), 0, _SUM)
    tl.store(kept_ptr + row * S + s, z)


@triton.jit
def _split_walk_kernel(logits_ptr, stride_row, temp_ptr, u_ptr, tok_in_ptr, mraw_ptr, arg_ptr, z_ptr, thr_ptr,
                       kept_ptr, tok_out_ptr, a_out_ptr, b_out_ptr, probs_ptr, V, S,
                       MODE: tl.constexpr, CUT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                       S_PAD: tl.constexpr):
    """Grid (N,) for MODE 0 (pick) and 1 (interval); grid (N, S) for MODE 2 (write the probabilities of chunk s).
    Every program combines the row's chunk masses (after the top-k / top-p cut thr, with CUT) with the same
    arithmetic, so all agree on the chunk boundaries B_s = (sum of chunk masses up to s) / Z. pick walks only the
    chunk s* holding u (the first with B_s > u), starting at its lower boundary; a u that rounding lets walk past
    the chunk's end takes the chunk's last nonzero token. The interval of t clips the in-chunk walk to
    [B_{s-1}, B_s) (the row's last nonzero token ends at 1), so pick(u) == t exactly for every float32 u in it."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    sidx = tl.arange(0, S_PAD)
    smask = sidx < S
    temp = tl.load(temp_ptr + row).to(tl.float32)
    greedy = temp <= 0.0
    scale = tl.where(greedy, 1.0, temp)
    mraw, amax, m, mass = _chunk_masses(mraw_ptr, arg_ptr, z_ptr, row, S, V, scale, S_PAD)
    all_mass = tl.reduce(mass, 0, _SUM)
    bad = (all_mass != all_mass) | (mraw == float("-inf"))
    if CUT:
        mass = tl.load(kept_ptr + row * S + sidx, mask=smask, other=0.0)
        thr = tl.load(thr_ptr + row)
    else:
        thr = tl.full([], KEY_BELOW_ALL, tl.int64)
    r = 1.0 / tl.reduce(mass, 0, _SUM)
    cum = tl.associative_scan(mass, 0, _SUM)
    upper = cum * r
    last_chunk = tl.reduce(tl.where(mass > 0.0, sidx, -1), 0, _MAX)
    load_limit = tl.where(greedy | bad, 0, V)

    if MODE == 2:
        s = tl.program_id(1)
        for b in range(0, CHUNK, BLOCK):
            idx = s * CHUNK + b + tl.arange(0, BLOCK)
            p = _masses(base, idx, V, load_limit, scale, m, thr, greedy, amax) * tl.where(greedy, 1.0, r)
            tl.store(probs_ptr + row * V + idx, tl.where(bad, float("nan"), p), mask=idx < V)
    else:
        if MODE == 0:
            u = tl.load(u_ptr + row).to(tl.float32)
            s = tl.minimum(tl.reduce(tl.where(smask & (upper > u), sidx, S), 0, _MIN), last_chunk)
        else:
            t = tl.load(tok_in_ptr + row).to(tl.int32)
            s = t // CHUNK
        s = tl.maximum(s, 0)
        lower = tl.reduce(tl.where(sidx < s, upper, 0.0), 0, _MAX)
        run = tl.reduce(tl.where(sidx < s, cum, 0.0), 0, _MAX)
        top = tl.reduce(tl.where(sidx == s, upper, 0.0), 0, _MAX)
        start = s * CHUNK
        # greedy and bad rows read no logits: their walk is empty (handled below)
        end = tl.where(load_limit > 0, tl.minimum(start + CHUNK, V), start)
        if MODE == 0:
            found, lastpos = _walk_to_u(base, start, end, load_limit, scale, m, thr, greedy, amax, run, r, u, V,
                                        probs_ptr, False, BLOCK)
            tok = tl.where(found < V, found, tl.where(lastpos >= 0, lastpos, amax))
            tok = tl.where(greedy, amax, tok)
            prob = tl.where(greedy, 1.0, tl.exp(_scaled(base, tok, (greedy == 0) & (bad == 0), scale) - m) * r)
            tl.store(tok_out_ptr + row, tl.where(bad, -1, tok).to(tl.int64))
            tl.store(a_out_ptr + row, tl.where(bad, float("nan"), prob))
        else:
            left, cn_t, lastpos = _walk_to_token(base, start, end, load_limit, scale, m, thr, greedy, amax, run, r,
                                                 t, lower, BLOCK)
            x_t = _scaled(base, t, (greedy == 0) & (bad == 0) & (t >= 0) & (t < V), scale)
            positive = (_ordered_key(x_t) >= thr) & (tl.exp(x_t - m) > 0.0)
            right = tl.where(t == lastpos, tl.where(s == last_chunk, 1.0, top), tl.minimum(cn_t, top))
            left = tl.minimum(left, 1.0)
            right = tl.where(positive, tl.maximum(tl.minimum(right, 1.0), left), left)
            beyond = (positive == 0) & ((s > last_chunk) | ((s == last_chunk) & (t > lastpos)))
            left = tl.where(beyond, 1.0, left)
            right = tl.where(beyond, 1.0, right)
            # Greedy: one-hot at the first maximum.
            left = tl.where(greedy, tl.where(t > amax, 1.0, 0.0), left)
            right = tl.where(greedy, tl.where(t >= amax, 1.0, 0.0), right)
            tl.store(a_out_ptr + row, tl.where(bad, float("nan"), left))
            tl.store(b_out_ptr + row, tl.where(bad, float("nan"), right))


@triton.jit
def _cp_kernel(logw_ptr, logw_s0, logw_s1, comp_ptr, comp_s0, comp_s1, comp_s2, tok_ptr,
               next_ptr, next_s0, next_s1, next_s2, out_logw_ptr, q_ptr, q_stride, R, V,
               UPDATE: tl.constexpr, R_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (N, cdiv(V, BLOCK)). UPDATE: log w + log P_a(token) (written by the first V-block), then
    q[v] = sum_a softmax(log w)_a * exp(next[a, v]) for this program's block of v."""
    row = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1)
    a = tl.arange(0, R_PAD)
    amask = a < R
    lw = tl.load(logw_ptr + row * logw_s0 + a * logw_s1, mask=amask, other=float("-inf")).to(tl.float32)
    if UPDATE:
        t = tl.load(tok_ptr + row).to(tl.int64)
        lp = tl.load(comp_ptr + row * comp_s0 + a * comp_s1 + t * comp_s2, mask=amask, other=0.0).to(tl.float32)
        lw = lw + lp
        if vb == 0:
            tl.store(out_logw_ptr + row * R + a, lw, mask=amask)
    mx = tl.reduce(lw, 0, _MAX)
    w = tl.exp(lw - mx)
    w = w / tl.reduce(w, 0, _SUM)
    offs = vb * BLOCK + tl.arange(0, BLOCK)
    vmask = offs < V
    lp_next = tl.load(next_ptr + row * next_s0 + a[:, None] * next_s1 + offs[None, :] * next_s2,
                      mask=amask[:, None] & vmask[None, :], other=float("-inf")).to(tl.float32)
    q = tl.reduce(w[:, None] * tl.exp(lp_next), 0, _SUM)
    tl.store(q_ptr + row * q_stride + offs, q, mask=vmask)


@triton.jit
def _u_features_kernel(u_ptr, out_ptr, n, KIND: tl.constexpr, NF: tl.constexpr, BLOCK: tl.constexpr):
    """out[i, j] = bit j of float32 u[i] (KIND 0) or cos((j + 1) pi u[i]) (KIND 1)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < n
    u = tl.load(u_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    j = tl.arange(0, NF)
    if KIND == 0:
        bits = u.to(tl.int32, bitcast=True)
        f = ((bits[:, None] >> j[None, :]) & 1).to(tl.float32)
    else:
        kpi = (j + 1).to(tl.float32) * 3.141592653589793
        f = tl.cos(kpi[None, :] * u[:, None])
    tl.store(out_ptr + rows[:, None].to(tl.int64) * NF + j[None, :], f, mask=rmask[:, None])


def interpreting() -> bool:
    return bool(triton.knobs.runtime.interpret)


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def launch_config(V: int, device: torch.device, block: int | None = None, search_block: int | None = None) -> dict:
    """Block and chunk sizes of the sampling kernels. pick and cdf_interval must use the same ones (their bits agree
    then). CHUNK: the rows' chunks of the statistics and the walk; SEARCH_CHUNK: the rows' shares of a threshold
    search, SEARCH_BLOCK x NPROBE candidate comparisons per step."""
    if interpreting() or device.type != "cuda":
        # The interpreter's cost is per op and per program, not per element: few large blocks, many probes (fewer
        # search passes), 4 chunks per row so that the walk's chunk boundaries are exercised and 2 search shares
        # per row so that their sum is.
        block = block or min(32768, max(16, _next_pow2(V)))
        search_block = search_block or max(16, _next_pow2(triton.cdiv(V, 2)))
        return {"BLOCK": block, "CHUNK": block * triton.cdiv(triton.cdiv(V, block), 4), "SEARCH_BLOCK": search_block,
                "SEARCH_CHUNK": search_block * triton.cdiv(triton.cdiv(V, search_block), 2),
                "NPROBE": max(16, min(4096, (1 << 20) // search_block))}
    block = block or min(1024, max(128, _next_pow2(V)))
    search_block = search_block or min(block, 512)
    return {"BLOCK": block, "CHUNK": 4 * block, "SEARCH_BLOCK": search_block, "SEARCH_CHUNK": 4 * block,
            "NPROBE": NPROBE}


def _require_launchable(device: torch.device) -> None:
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(f"the Triton kernels need CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 to run "
                           "them in Triton's CPU interpreter, or use vllm_ptp.kernels, which falls back to torch")


def _sample(logits, temperature, top_k, top_p, u, tokens, mode, write_probs, block=None, search_block=None):
    N, V = logits.shape
    dev = logits.device
    _require_launchable(dev)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    temperature = temperature.to(device=dev, dtype=torch.float32).contiguous()
    cfg = launch_config(V, dev, block, search_block)
    a_out = torch.empty(N, device=dev, dtype=torch.float32)
    if mode == 0:
        u = u.to(device=dev, dtype=torch.float32).contiguous()
        tok_in = torch.empty(1, device=dev, dtype=torch.int64)
        tok_out = torch.empty(N, device=dev, dtype=torch.int64)
        b_out = a_out
    else:
        u = temperature
        tok_in = tokens.to(device=dev, dtype=torch.int64).contiguous()
        tok_out = tok_in
        b_out = torch.empty(N, device=dev, dtype=torch.float32)
    probs = torch.empty(N, V, device=dev, dtype=torch.float32) if write_probs else a_out
    if N > 0:
        _launch(logits, temperature, top_k, top_p, u, tok_in, tok_out, a_out, b_out, probs, mode, write_probs, cfg)
    if mode == 0:
        return (tok_out, a_out, probs) if write_probs else (tok_out, a_out)
    return a_out, b_out


def _launch(logits, temperature, top_k, top_p, u, tok_in, tok_out, a_out, b_out, probs, mode, write_probs, cfg):
    """Chunk statistics over an (N, S) grid; with top-k / top-p, the cuts as searches spread over the rows' shares;
    then one walk of one chunk per row (and, for the probabilities, an (N, S) grid writing them): the whole GPU works
    even for one row."""
    N, V = logits.shape
    chunk, block = cfg["CHUNK"], cfg["BLOCK"]
    S = triton.cdiv(V, chunk)
    mraw = torch.empty(N, S, device=logits.device, dtype=torch.float32)
    arg = torch.empty(N, S, device=logits.device, dtype=torch.int32)
    z = torch.empty(N, S, device=logits.device, dtype=torch.float32)
    _split_stats_kernel[(N, S)](logits, logits.stride(0), temperature, mraw, arg, z, V, S,
                                CHUNK=chunk, BLOCK=block, num_warps=4, enable_fp_fusion=False)
    cut = top_k is not None or top_p is not None
    thr, kept = _cut(logits, temperature, top_k, top_p, mraw, arg, z, cfg) if cut else (z, z)
    args = (logits, logits.stride(0), temperature, u, tok_in, mraw, arg, z, thr, kept, tok_out, a_out, b_out, probs,
            V, S)
    meta = {"CUT": cut, "CHUNK": chunk, "BLOCK": block, "S_PAD": max(2, _next_pow2(S)), "num_warps": 4,
            "enable_fp_fusion": False}
    _split_walk_kernel[(N,)](*args, MODE=mode, **meta)
    if write_probs:
        _split_walk_kernel[(N, S)](*args, MODE=2, **meta)


def search_passes(nprobe: int) -> int:
    """Passes of the candidate search that narrow any key range (at most 2^32 + 1 keys wide) to one key: each pass
    tries nprobe evenly spread keys, leaving a range at most ceil(width / (nprobe + 1)) wide."""
    width, passes = 2 ** 32 + 1, 0
    while width > 1:
        width, passes = -(-width // (nprobe + 1)), passes + 1
    return passes


def _cut(logits, temperature, top_k, top_p, mraw, arg, z, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """top-k, then top-p, each an exact search for its threshold key over the (N, S) grid -> (thr [N]: every token
    with key >= thr is kept; each chunk's kept mass [N, S], relative to the row's scaled max)."""
    N, V = logits.shape
    S = mraw.shape[1]
    dev = logits.device
    nprobe, chunk, search_chunk = cfg["NPROBE"], cfg["CHUNK"], cfg["SEARCH_CHUNK"]
    shares_per_row = triton.cdiv(V, search_chunk)
    thr = torch.full((N,), _KEY_BELOW_ALL, device=dev, dtype=torch.int64)
    m = torch.empty(N, device=dev, dtype=torch.float32)
    lo, hi = torch.empty(N, device=dev, dtype=torch.int64), torch.empty(N, device=dev, dtype=torch.int64)
    bound = torch.empty(N, device=dev, dtype=torch.float32)
    shares = torch.empty(N, shares_per_row, nprobe, device=dev, dtype=torch.float32)
    kept = None
    for values, weighted in ((top_k, False), (top_p, True)):
        if values is None:
            continue
        values = values.to(device=dev, dtype=torch.float32 if weighted else torch.int64).contiguous()
        _cut_setup_kernel[(N,)](temperature, values, mraw, arg, z, z if kept is None else kept, m, thr, lo, hi,
                                bound, V, S, TOP_P=weighted, KEPT=kept is not None, S_PAD=max(2, _next_pow2(S)),
                                num_warps=4, enable_fp_fusion=False)
        for _ in range(search_passes(nprobe)):
            _search_partials_kernel[(N, shares_per_row)](
                logits, logits.stride(0), temperature, m, thr, lo, hi, shares, V, shares_per_row, WEIGHTED=weighted,
                CHUNK=search_chunk, SEARCH_BLOCK=cfg["SEARCH_BLOCK"], NPROBE=nprobe, num_warps=4,
                enable_fp_fusion=False)
            _search_update_kernel[(N,)](shares, lo, hi, thr, bound, shares_per_row, NPROBE=nprobe,
                                        S_PAD=max(2, _next_pow2(shares_per_row)), num_warps=4, enable_fp_fusion=False)
        kept = torch.empty(N, S, device=dev, dtype=torch.float32) if kept is None else kept
        _kept_mass_kernel[(N, S)](logits, logits.stride(0), temperature, m, thr, kept, V, S, CHUNK=chunk,
                                  BLOCK=cfg["BLOCK"], num_warps=4, enable_fp_fusion=False)
    return thr, kept


def pick_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
         u: torch.Tensor, return_probs: bool = False, *, block: int | None = None,
         search_block: int | None = None):
    """logits [N, V] (fp32/bf16/fp16), temperature [N] (<= 0: greedy), top_k [N] int (<= 0 or >= V: off) or None,
    top_p [N] (>= 1: off) or None, u [N] in [0, 1) -> (token ids [N] int64, p(token) [N] float32[, probs [N, V]
    float32 with return_probs]). No input checks here (see vllm_ptp.kernels); a row with NaN/+inf logits or no finite
    logit gives token -1 and probability NaN. block/search_block override the launch config (tests)."""
    return _sample(logits, temperature, top_k, top_p, u, None, 0, return_probs, block, search_block)


def cdf_interval(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                 top_p: torch.Tensor | None, tokens: torch.Tensor, *, block: int | None = None,
                 search_block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same inputs as pick with token ids [N] instead of u -> (left, right) float32 [N]: pick(u) == token for every
    float32 u in [left, right) (same launch config); right - left = p(token) up to rounding. Bad rows give NaN."""
    return _sample(logits, temperature, top_k, top_p, None, tokens, 1, False, block, search_block)


def _cp_block(V: int, device: torch.device, r_pad: int) -> tuple[int, int]:
    if interpreting() or device.type != "cuda":
        return min(8192, max(16, _next_pow2(V))), 4
    return max(128, min(1024, 8192 // r_pad, _next_pow2(V))), 4


def cp_posterior(log_weights: torch.Tensor, component_log_probs: torch.Tensor | None, tokens: torch.Tensor | None,
                 next_component_log_probs: torch.Tensor | None):
    """log_weights [N, r]; component_log_probs [N, r, V_prev] and tokens [N] (or both None: no update);
    next_component_log_probs [N, r, V] or None -> (updated log-weights [N, r] float32, q [N, V] float32 or None)."""
    N, R = log_weights.shape
    dev = log_weights.device
    update = tokens is not None
    lw = log_weights
    if not update and next_component_log_probs is None:
        return log_weights.float(), None
    if next_component_log_probs is None:
        # Only the update: gather r log-probs per row, nothing to stream.
        comp = component_log_probs
        idx = tokens.long()[:, None, None].expand(N, R, 1)
        return lw.float() + comp.gather(-1, idx).squeeze(-1).float(), None
    nxt = next_component_log_probs
    V = nxt.shape[-1]
    _require_launchable(dev)
    r_pad = max(2, _next_pow2(R))
    block, warps = _cp_block(V, dev, r_pad)
    q = torch.empty(N, V, device=dev, dtype=torch.float32)
    out_lw = torch.empty(N, R, device=dev, dtype=torch.float32)
    comp = component_log_probs if update else nxt
    tok = tokens.to(device=dev, dtype=torch.int64).contiguous() if update else out_lw
    if N > 0:
        _cp_kernel[(N, triton.cdiv(V, block))](
            lw, lw.stride(0), lw.stride(1), comp, comp.stride(0), comp.stride(1), comp.stride(2), tok,
            nxt, nxt.stride(0), nxt.stride(1), nxt.stride(2), out_lw, q, V, R, V,
            UPDATE=update, R_PAD=r_pad, BLOCK=block, num_warps=warps)
    return (out_lw if update else lw.float()), q


def mixture_probs(log_weights: torch.Tensor, component_log_probs: torch.Tensor) -> torch.Tensor:
    """sum_a softmax(log_weights)_a * exp(component_log_probs_a): cp_posterior without the update."""
    return cp_posterior(log_weights, None, None, component_log_probs)[1]


def u_features(u: torch.Tensor, kind: str = "binary", n: int = 32) -> torch.Tensor:
    """u [...] -> [..., n] float32: the 32 bits of float32 u (least significant first) or cos(k pi u), k = 1..n."""
    if kind not in ("binary", "quarter_cos"):
        raise ValueError(f"unknown u feature kind {kind!r}: use 'binary' or 'quarter_cos'")
    if kind == "binary" and n != 32:
        raise ValueError("binary u features have exactly 32 bits")
    _require_launchable(u.device)
    flat = u.reshape(-1).to(torch.float32).contiguous()
    nf = _next_pow2(n)
    out = torch.empty(flat.numel(), nf, device=u.device, dtype=torch.float32)
    block = 64
    if flat.numel():
        _u_features_kernel[(triton.cdiv(flat.numel(), block),)](
            flat, out, flat.numel(), KIND=0 if kind == "binary" else 1, NF=nf, BLOCK=block)
    return out[:, :n].reshape(*u.shape, n)
