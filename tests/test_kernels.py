"""The sampling kernels against their torch references; the references against their contract.

The Triton kernels run under Triton's CPU interpreter, which needs TRITON_INTERPRET=1 before triton is first imported
(in the full suite vLLM imports it early): the tests that use the kernels (fixture `T`) run in a fresh interpreter,
started by test_triton_kernels_in_the_interpreter with that variable set; in the calling process they are skipped.

Tolerance. Kernel and reference accumulate the CDF in different orders (the interpreter's float32 block cumsum vs
torch's double-accumulated cumsum), so a token may differ where u lies within rounding of a CDF boundary. TOL = 2e-5
(on the [0, 1] CDF scale; about 10x the largest difference seen at V = 128256) bounds that: every mismatch must have
u within TOL of the reference CDF at the boundary between the two tokens (so all tokens between them carry < 2 TOL),
and kernel intervals must lie within TOL of the reference's. Top-k cuts are exact (integer counts on the same scaled
float32 values), so kept sets must be identical there; a top-p kept set may differ only by tokens whose float64 mass
above them is within TOL of p.
"""
import importlib.util
import math
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
import torch
from stats import chi_square_p_value

import vllm_ptp.kernels as kernels
from vllm_ptp.kernels import dispatch
from vllm_ptp.kernels import reference as ref

HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")

TOL = 2e-5
TEMPS, TOPKS, TOPPS = (0.0, 0.7, 1.5), (1, 50, 0), (0.9, 1.0)
COMBOS = list(product(TEMPS, TOPKS, TOPPS))  # 18 row settings
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# VLLM_PTP_TEST_DEVICE=cuda runs the same kernel-vs-reference tests on the compiled kernels (a GPU check; CI has none).
TEST_DEVICE = torch.device(os.environ.get("VLLM_PTP_TEST_DEVICE", "cpu"))


class OnDevice:
    """The triton_sampling module with tensor arguments moved to `device` and tensor results brought back to the CPU,
    so each test builds its inputs and checks its outputs on the CPU whichever device runs the kernels."""

    def __init__(self, module, device: torch.device):
        self.module, self.device = module, device

    def _to(self, x, device):
        if isinstance(x, torch.Tensor):
            return x.to(device)
        if isinstance(x, tuple):
            return tuple(self._to(y, device) for y in x)
        return x

    def __getattr__(self, name):
        attr = getattr(self.module, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            out = attr(*self._to(args, self.device), **{k: self._to(v, self.device) for k, v in kwargs.items()})
            return self._to(out, torch.device("cpu"))
        return call


@pytest.fixture(scope="module")
def T():
    """triton_sampling: interpreted (TRITON_INTERPRET=1 while this module's tests run), or compiled on CUDA."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    if TEST_DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            pytest.fail("VLLM_PTP_TEST_DEVICE=cuda but torch sees no GPU")
        from vllm_ptp.kernels import triton_sampling
        assert not triton_sampling.interpreting()
        yield OnDevice(triton_sampling, TEST_DEVICE)
        return
    if not INTERPRETED:
        pytest.skip("runs in a fresh interpreter with TRITON_INTERPRET=1 (test_triton_kernels_in_the_interpreter)")
    from vllm_ptp.kernels import triton_sampling
    assert triton_sampling.interpreting()
    yield OnDevice(triton_sampling, TEST_DEVICE)


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
in_the_calling_process = pytest.mark.skipif(INTERPRETED or TEST_DEVICE.type == "cuda" or not HAVE_TRITON,
                                            reason="starts the interpreted run (CPU, triton installed)")


# The interpreted runs are single-threaded Python for minutes: conftest starts them as soon as the suite is collected
# (start_interpreted), beside the engine tests, and the two tests below collect their results.
_interpreted: dict[str, tuple[subprocess.Popen, Path]] = {}
INTERPRETED_TESTS = {"test_triton_kernels_in_the_interpreter": "not slow",
                     "test_triton_kernels_in_the_interpreter_slow_cases": "slow"}


def start_interpreted(markers: list[str], scratch: Path) -> None:
    """One child pytest with TRITON_INTERPRET=1 for the selected markers (both: one run of everything)."""
    selection = markers[0] if len(markers) == 1 else " or ".join(f"({m})" for m in markers)
    log = scratch / "interpreted_kernels.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", selection,
                                 str(Path(__file__).resolve())], cwd=Path(__file__).parent, stdout=out,
                                stderr=subprocess.STDOUT, env=dict(os.environ, TRITON_INTERPRET="1"),
                                preexec_fn=_die_with_parent)
    for marker in markers:
        _interpreted[marker] = (proc, log)


def _die_with_parent() -> None:
    """Linux: the child is killed with the suite, even when the suite itself is killed."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_interpreted() -> None:
    for proc, _ in _interpreted.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_interpreted(marker: str) -> None:
    if marker not in _interpreted:  # not started at collection (the test was called some other way)
        start_interpreted([marker], Path(__import__("tempfile").mkdtemp()))
    proc, log = _interpreted[marker]
    try:
        proc.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    output = log.read_text()
    assert proc.returncode == 0 and " passed" in output, output[-8000:]


@in_the_calling_process
def test_triton_kernels_in_the_interpreter():
    run_interpreted("not slow")


@in_the_calling_process
@pytest.mark.slow
def test_triton_kernels_in_the_interpreter_slow_cases():
    run_interpreted("slow")


def rows(N, V, dtype, combos=COMBOS, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * scale).to(dtype)
    settings = [combos[i % len(combos)] for i in range(N)]
    temp = torch.tensor([s[0] for s in settings])
    top_k = torch.tensor([s[1] for s in settings])
    top_p = torch.tensor([s[2] for s in settings])
    u = torch.rand(N, generator=g)
    return logits, temp, top_k, top_p, u


def top_p_margin(logits, temp, top_k, top_p, row, token):
    """|float64 mass of the tokens scaled above `token` (top-k applied) - p| for one row."""
    x = logits[row].float() / (temp[row].float() if temp[row] > 0 else 1.0)
    V = x.numel()
    k = int(top_k[row]) if top_k is not None else 0
    if 0 < k < V:
        x = x.masked_fill(x < x.topk(k).values[-1], float("-inf"))
    e = (x.double() - x.max().double()).exp()
    return abs(float(e[x > x[token]].sum() / e.sum()) - float(top_p[row]))


def compare_with_reference(T, logits, temp, top_k, top_p, u, early_exit_too=False, **cfg):
    tok, ptok, probs = T.pick_from_logits(logits, temp, top_k, top_p, u, True, **cfg)
    rtok, _, rprobs = ref.pick_from_logits(logits, temp, top_k, top_p, u, True)
    assert tok.dtype == torch.int64 and ptok.dtype == torch.float32 and probs.dtype == torch.float32
    # Kept sets: identical except at an ambiguous top-p cut.
    diff = (probs > 0) != (rprobs > 0)
    for r, c in diff.nonzero().tolist():
        assert top_p is not None and top_p[r] < 1, f"row {r}: kept sets differ at token {c} without top-p"
        assert top_p_margin(logits, temp, top_k, top_p, r, c) < TOL, f"row {r}: top-p cut differs at token {c}"
    same = ~diff.any(-1)
    assert torch.allclose(probs[same], rprobs[same], rtol=1e-5, atol=1e-8)
    assert torch.allclose(ptok, probs.gather(-1, tok[:, None])[:, 0], rtol=1e-6, atol=0)
    assert bool((ptok > 0).all()), "a zero-probability token was picked"
    # Tokens: equal unless u is within TOL of the reference CDF boundary between the two.
    cdf = rprobs.double().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    lo, hi = torch.minimum(tok, rtok), torch.maximum(tok, rtok)
    ud = u.double()
    near = ((cdf.gather(-1, lo[:, None])[:, 0] - ud).abs() <= TOL) & \
           ((cdf.gather(-1, (hi - 1).clamp(min=0)[:, None])[:, 0] - ud).abs() <= TOL)
    mismatch = tok != rtok
    assert bool((near | ~mismatch | ~same).all()), f"tokens differ away from a CDF boundary: rows " \
                                                   f"{(mismatch & ~near & same).nonzero().flatten().tolist()}"
    assert int(mismatch.sum()) <= max(1, logits.shape[0] // 10)
    # Intervals: the kernel's contains u exactly and is within TOL of the reference's.
    left, right = T.cdf_interval(logits, temp, top_k, top_p, tok, **cfg)
    assert bool(((left <= u) & (u < right)).all())
    rl, rr = ref.interval_from_probs(rprobs, tok)
    assert float((left - rl)[same].abs().max()) <= TOL and float((right - rr)[same].abs().max()) <= TOL
    if early_exit_too:
        tok2, ptok2 = T.pick_from_logits(logits, temp, top_k, top_p, u, **cfg)
        assert torch.equal(tok2, tok) and torch.equal(ptok2, ptok)
    return tok, probs


# ---- the Triton kernels against the references (interpreter) ----

@needs_triton
@pytest.mark.parametrize("dtype,V,N,cfg", [
    ("fp32", 1000, 64, {}),
    ("bf16", 5000, 18, {"block": 2048}),  # 3 blocks, the last partial
    ("fp16", 5000, 18, {"block": 1024, "search_block": 512}),
    ("bf16", 49152, 4, {}),
    ("bf16", 128256, 3, {}),
    ("fp32", 128256, 1, {}),
])
def test_pick_and_interval_match_reference(T, dtype, V, N, cfg):
    big = [(0.7, 50, 0.9), (1.5, 0, 0.9), (1.0, 0, 1.0), (0.0, 0, 1.0)]
    logits, temp, top_k, top_p, u = rows(N, V, DTYPES[dtype], COMBOS if V <= 5000 else big, seed=V + N)
    compare_with_reference(T, logits, temp, top_k, top_p, u, **cfg)
    compare_with_reference(T, logits, temp, None, None, u, **cfg)  # the chunked path (no top-k / top-p)


@needs_triton
def test_without_top_k_top_p_streams_and_stops_early(T):
    logits, temp, _, _, u = rows(8, 5000, torch.float32, [(0.0, 0, 1), (0.7, 0, 1), (1.5, 0, 1)], seed=3)
    compare_with_reference(T, logits, temp, None, None, u, early_exit_too=True, block=1024)


@needs_triton
def test_ties_and_minus_inf(T):
    # bf16-like ties at the top-k and top-p cuts, masked (-inf) vocabulary entries, -0.0 vs 0.0.
    logits = torch.tensor([[0.0, -0.0, 1.0, 1.0, float("-inf"), 0.5, 1.0, -0.0]] * 4)
    temp = torch.tensor([1.0, 1.0, 0.5, 0.0])
    top_k = torch.tensor([2, 4, 6, 1])
    top_p = torch.tensor([1.0, 0.5, 1.0, 1.0])
    u = torch.tensor([0.99, 0.5, 0.3, 0.1])
    probs = ref.processed_probs(logits, temp, top_k, top_p)
    assert (probs[0] > 0).tolist() == [False, False, True, True, False, False, True, False]  # 3 tied at the 2nd
    assert (probs[1] > 0).tolist() == [False, False, True, True, False, False, True, False]
    assert (probs[2] > 0).tolist() == [True, True, True, True, False, True, True, True]  # -0.0 == 0.0 at the cut
    tok, kprobs = compare_with_reference(T, logits, temp, top_k, top_p, u, block=4)
    assert torch.equal(kprobs > 0, probs > 0)
    assert tok[3] == 2  # greedy: the first maximum


@needs_triton
@pytest.mark.parametrize("cuts", [True, False], ids=["top-k/top-p", "chunked"])
def test_interval_round_trip(T, cuts):
    logits, temp, top_k, top_p, u = rows(9, 5000, torch.bfloat16, COMBOS[::2], seed=7)
    if not cuts:
        top_k = top_p = None
    cfg = {"block": 1024}
    tok, _ = T.pick_from_logits(logits, temp, top_k, top_p, u, **cfg)
    left, right = T.cdf_interval(logits, temp, top_k, top_p, tok, **cfg)
    below = torch.nextafter(left, torch.zeros_like(left))
    last_inside = torch.nextafter(right, torch.zeros_like(right))
    us = torch.cat([left, last_inside, (left + right) / 2, below, right])
    n = len(tok)
    rep = lambda t: None if t is None else t.repeat(5, *([1] * (t.dim() - 1)))  # noqa: E731
    got, _ = T.pick_from_logits(rep(logits), rep(temp), rep(top_k), rep(top_p), us.clamp(max=1 - 2 ** -24), **cfg)
    got = got.view(5, n)
    assert (got[:3] == tok).all(), "a u inside [left, right) did not give the token back"
    assert ((got[3] != tok) | (left == 0)).all() and ((got[4] != tok) | (right == 1)).all()
    # the same property for the reference, on every nonzero token of small rows
    lg, tp, tk, pp, _ = rows(18, 40, torch.float32, seed=8)
    probs = ref.processed_probs(lg, tp, tk, pp)
    for t in range(40):
        tokens = torch.full((18,), t)
        rl, rr = ref.cdf_interval(lg, tp, tk, pp, tokens)
        nz = probs[:, t] > 0
        assert torch.equal(rl == rr, ~nz)
        inside = torch.stack([rl, torch.nextafter(rr, torch.zeros_like(rr)), (rl + rr) / 2])[:, nz]
        for uu in inside:
            assert (ref.pick_from_probs(uu, probs[nz]) == t).all()


@needs_triton
@pytest.mark.slow  # about 5 minutes in Triton's CPU interpreter (both cases)
@pytest.mark.parametrize("cuts", [True, False], ids=["top-k/top-p", "chunked"])
def test_intervals_tile_the_unit_interval(T, cuts):
    """Every token's interval, in token-id order, starts where the previous nonzero one ended: [0, 1) is cut into
    the intervals exactly, across the chunk boundaries too (V = 64 in blocks of 4: 4 chunks of 16), and a pick at
    each interval's ends gives its token."""
    logits, temp, top_k, top_p, _ = rows(6, 64, torch.float32, [(0.7, 0, 1.0), (1.5, 9, 0.9), (1.0, 0, 1.0)], seed=9)
    logits[2, 16:32] = float("-inf")  # a whole chunk without mass
    if not cuts:
        top_k = top_p = None
    n, V = logits.shape
    toks = torch.arange(V).repeat(n)
    rep = lambda t: None if t is None else t.repeat_interleave(V, dim=0)  # noqa: E731
    left, right = T.cdf_interval(rep(logits), rep(temp), rep(top_k), rep(top_p), toks, block=4)
    left, right = left.view(n, V), right.view(n, V)
    for i in range(n):
        nz = (right[i] > left[i]).nonzero().flatten()
        assert left[i, nz[0]] == 0 and right[i, nz[-1]] == 1
        assert torch.equal(right[i, nz[:-1]], left[i, nz[1:]]), f"row {i}: a gap or overlap between intervals"
        us = torch.cat([left[i, nz], torch.nextafter(right[i, nz], torch.zeros(len(nz)))])
        m = len(us)
        got, _ = T.pick_from_logits(logits[i].expand(m, V).contiguous(), temp[i].expand(m), None if top_k is None else
                        top_k[i].expand(m), None if top_p is None else top_p[i].expand(m), us, block=4)
        assert torch.equal(got, torch.cat([nz, nz]))


@needs_triton
@pytest.mark.parametrize("top_k,top_p,n", [(None, None, 400), (7, 0.9, 200)])
def test_picks_follow_the_processed_distribution(T, top_k, top_p, n):
    V = 10
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(1, V, generator=g).expand(n, V).contiguous()
    temp = torch.full((n,), 0.8)
    tk = None if top_k is None else torch.full((n,), top_k)
    tp = None if top_p is None else torch.full((n,), top_p)
    tok, _ = T.pick_from_logits(logits, temp, tk, tp, torch.rand(n, generator=g))
    expected = ref.processed_probs(logits[:1], temp[:1], None if tk is None else tk[:1], None if tp is None else tp[:1])
    if top_k is not None:
        assert 1 < int((expected > 0).sum()) <= top_k
    assert chi_square_p_value(torch.bincount(tok, minlength=V), expected[0]) > 1e-3


@needs_triton
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cp_posterior_matches_reference(T, dtype):
    g = torch.Generator().manual_seed(5)
    N, r, V = 5, 3, 20000  # 3 blocks of 8192 in the interpreter, the last partial
    comp = torch.randn(N, r, V, generator=g).log_softmax(-1).to(DTYPES[dtype])
    nxt = (torch.randn(N, r, V, generator=g) * 2).log_softmax(-1).to(DTYPES[dtype])
    log_w = torch.randn(N, r, generator=g).log_softmax(-1)
    tokens = torch.randint(V, (N,), generator=g)
    lw, q = T.cp_posterior(log_w, comp, tokens, nxt)
    rlw, rq = ref.cp_posterior(log_w, comp, tokens, nxt)
    assert torch.allclose(lw, rlw, atol=1e-6) and torch.allclose(q, rq, rtol=1e-5, atol=1e-9)
    assert torch.allclose(T.mixture_probs(log_w, nxt), ref.mixture_probs(log_w, nxt), rtol=1e-5, atol=1e-9)
    # rank 1 and a non-power-of-two rank; non-contiguous component views
    for rank in (1, 5):
        c = torch.randn(N, V, rank, generator=g).log_softmax(1).transpose(1, 2)
        w = torch.randn(N, rank, generator=g)
        lw, q = T.cp_posterior(w, c, tokens, c)
        rlw, rq = ref.cp_posterior(w, c, tokens, c)
        assert torch.allclose(lw, rlw, atol=1e-6) and torch.allclose(q, rq, rtol=1e-5, atol=1e-9)


@needs_triton
def test_u_features_match_reference(T):
    u = torch.rand(3, 37)
    for kind, n in (("binary", 32), ("quarter_cos", 32), ("quarter_cos", 20)):
        assert torch.allclose(T.u_features(u, kind, n), ref.u_features(u, kind, n), atol=1e-6)


# ---- dispatch, import, bad input ----

def test_importing_the_package_does_not_import_triton():
    code = ("import sys, vllm_ptp.kernels as k\n"
            "assert sys.modules.get('triton') is None, 'triton imported'\n"
            "import torch\n"
            "k.pick_from_logits(torch.randn(2, 7), torch.ones(2), None, None, torch.rand(2))\n"
            "assert sys.modules.get('triton') is None, 'triton imported for CPU tensors'\n")
    hide = "import sys; sys.modules['triton'] = None\n"  # as if triton were not installed
    hidden = hide + code + "assert k.backend('cuda') == 'torch'\n"
    for prog in (code, hidden):
        env = {**os.environ, "VLLM_PTP_KERNELS": "auto"}
        out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("VLLM_PTP_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernels.backend("cpu") == "torch"
    assert kernels.backend("cuda") == ("triton" if HAVE_TRITON else "torch")
    monkeypatch.setenv("VLLM_PTP_KERNELS", "torch")
    assert kernels.backend("cuda") == "torch"
    monkeypatch.setenv("VLLM_PTP_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="VLLM_PTP_KERNELS"):
        kernels.backend("cpu")
    monkeypatch.setenv("VLLM_PTP_KERNELS", "triton")
    if HAVE_TRITON:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            kernels.pick_from_logits(torch.randn(1, 4), torch.ones(1), None, None, torch.rand(1))
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert kernels.backend("cpu") == "triton"
    monkeypatch.setattr(dispatch, "_triton_found", False)  # as if triton were not installed
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.backend("cpu")
    monkeypatch.setenv("VLLM_PTP_KERNELS", "auto")
    assert kernels.backend("cuda") == "torch"


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_dispatched_entry_points(backend, monkeypatch, request):
    if backend == "triton":
        if TEST_DEVICE.type == "cuda":
            pytest.skip("forced Triton on CPU tensors is the interpreter's case; see test_auto_dispatch_on_cuda")
        request.getfixturevalue("T")
    monkeypatch.setenv("VLLM_PTP_KERNELS", backend)
    logits, temp, top_k, top_p, u = rows(6, 300, torch.float32, COMBOS[1::3], seed=2)
    tok, ptok, probs = kernels.pick_from_logits(logits, temp, top_k, top_p, u, return_probs=True)
    rprobs = ref.processed_probs(logits, temp, top_k, top_p)
    assert torch.allclose(probs, rprobs, rtol=1e-5, atol=1e-8)
    assert torch.allclose(kernels.processed_probs(logits, temp, top_k, top_p), rprobs, rtol=1e-5, atol=1e-8)
    left, right = kernels.cdf_interval(logits, temp, top_k, top_p, tok)
    assert ((left <= u) & (u < right)).all() and torch.allclose(right - left, ptok, atol=1e-6)
    log_w, comp = torch.randn(6, 2), torch.randn(6, 2, 300).log_softmax(-1)
    lw, q = kernels.cp_posterior(log_w, comp, tok, comp)
    assert torch.allclose(q, ref.cp_posterior(log_w, comp, tok, comp)[1], rtol=1e-5, atol=1e-9)
    assert kernels.cp_posterior(log_w, comp, tok)[1] is None
    assert torch.allclose(kernels.mixture_probs(log_w, comp), ref.mixture_probs(log_w, comp), rtol=1e-5)
    assert kernels.u_features(u).shape == (6, 32)
    empty = kernels.pick_from_logits(logits[:0], temp[:0], None, None, u[:0])
    assert empty[0].shape == (0,)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_bad_input_raises(backend, monkeypatch, request):
    if backend == "triton":
        if TEST_DEVICE.type == "cuda":
            pytest.skip("forced Triton on CPU tensors is the interpreter's case; see test_auto_dispatch_on_cuda")
        request.getfixturevalue("T")
    monkeypatch.setenv("VLLM_PTP_KERNELS", backend)
    N, V = 3, 11
    logits, temp, u = torch.randn(N, V), torch.ones(N), torch.rand(N)
    pick = kernels.pick_from_logits
    cases = [
        (lambda: pick(logits[0], temp, None, None, u), "logits must be"),
        (lambda: pick(logits, temp[:2], None, None, u), "temperature must be"),
        (lambda: pick(logits, temp, None, None, u[:2]), "u must be"),
        (lambda: pick(logits.long(), temp, None, None, u), "float32, bfloat16 or float16"),
        (lambda: pick(logits, temp, torch.ones(N), None, u), "top_k must be an integer"),
        (lambda: pick(logits, temp, None, None, torch.tensor([0.1, 1.0, 0.2])), r"\[0, 1\)"),
        (lambda: pick(logits, temp, None, None, torch.tensor([0.1, -1e-9, 0.2])), r"\[0, 1\)"),
        (lambda: pick(logits, temp, None, None, torch.tensor([0.1, float("nan"), 0.2])), r"\[0, 1\)"),
        (lambda: pick(logits, temp, None, torch.tensor([0.9, 0.0, 1.0]), u), "top_p"),
        (lambda: pick(logits, temp, None, torch.tensor([0.9, -1.0, 1.0]), u), "top_p"),
        (lambda: pick(logits.index_fill(1, torch.tensor([3]), float("nan")), temp, None, None, u), "NaN"),
        (lambda: pick(logits.index_fill(1, torch.tensor([3]), float("inf")), temp, None, None, u), r"\+inf"),
        (lambda: pick(torch.full((N, V), float("-inf")), temp, None, None, u), "no finite"),
        (lambda: pick(logits, torch.tensor([1.0, float("nan"), 1.0]), None, None, u), "temperature"),
        (lambda: kernels.cdf_interval(logits, temp, None, None, torch.tensor([0, V, 1])), "token ids"),
        (lambda: kernels.cdf_interval(logits, temp, None, None, torch.tensor([0.0, 1.0, 1.0])), "integer"),
        (lambda: kernels.cp_posterior(torch.zeros(N, 2), torch.zeros(N, 3, V), torch.zeros(N, dtype=torch.long)),
         "component_log_probs must be"),
        (lambda: kernels.cp_posterior(torch.zeros(N, 2), torch.zeros(N, 2, V), torch.full((N,), V)), "token ids"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    # check=False skips the value checks (no host sync); the kernel then marks a bad row instead of raising.
    bad = logits.clone()
    bad[1, 4] = float("nan")
    tok, ptok = pick(bad, temp, None, None, u, check=False)
    if backend == "triton":
        assert tok[1] == -1 and math.isnan(ptok[1]) and (tok[[0, 2]] >= 0).all()
        left, right = kernels.cdf_interval(bad, temp, None, None, torch.zeros(N, dtype=torch.long), check=False)
        assert math.isnan(left[1]) and math.isnan(right[1]) and not left[[0, 2]].isnan().any()


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_dispatch_on_cuda(monkeypatch):
    """CUDA tensors take the compiled kernels by default, agree with the reference, and get the same input checks."""
    monkeypatch.delenv("VLLM_PTP_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernels.backend("cuda") == "triton"
    logits, temp, top_k, top_p, u = rows(32, 49152, torch.bfloat16, COMBOS, seed=4)
    on = [x.cuda() for x in (logits, temp, top_k, top_p, u)]
    tok, ptok, probs = kernels.pick_from_logits(*on, return_probs=True)
    assert tok.is_cuda and probs.is_cuda
    rprobs = ref.processed_probs(logits, temp, top_k, top_p)
    same = ((probs.cpu() > 0) == (rprobs > 0)).all(-1)
    assert torch.allclose(probs.cpu()[same], rprobs[same], rtol=1e-5, atol=1e-8)
    left, right = kernels.cdf_interval(*on[:4], tok)
    assert bool(((left <= on[4]) & (on[4] < right)).all())
    with pytest.raises(ValueError, match="NaN"):
        kernels.pick_from_logits(on[0].index_fill(1, torch.tensor([3], device="cuda"), float("nan")), *on[1:])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        kernels.pick_from_logits(*on[:4], torch.ones_like(on[4]))


# ---- the references' own contract (no triton needed) ----

def test_reference_top_p_keeps_ties_and_ignores_other_rows():
    logits = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2], [0.4, 0.2, 0.2, 0.2], [0.1, 0.4, 0.2, 0.3]]))
    probs = ref.processed_probs(logits, torch.ones(3), None, torch.tensor([0.5, 1.0, 0.6]))
    assert (probs[0] > 0).all()  # the smallest set reaching 0.5 is {0.4, one 0.2}: all three 0.2 are tied
    assert torch.allclose(probs[1], torch.tensor([0.4, 0.2, 0.2, 0.2]))
    assert torch.allclose(probs[2], torch.tensor([0.0, 4 / 7, 0.0, 3 / 7]))
    # A flat row at p = 1 keeps its whole vocabulary even when another row of the batch uses top-p.
    flat = torch.randn(2, 50000) * 0.01
    probs = ref.processed_probs(flat, torch.ones(2), None, torch.tensor([1.0, 0.5]))
    assert (probs[0] > 0).all()


def test_reference_pick_never_returns_a_zero_probability_token():
    probs = torch.tensor([[0.3, 0.7 + 1e-7, 0.0, 0.0]])
    u = torch.tensor([1 - 2 ** -24])
    assert ref.pick_from_probs(u, probs).item() == 1


def test_reference_cp_posterior_is_the_proposer_update():
    g = torch.Generator().manual_seed(1)
    N, r, V = 4, 3, 9
    comp = torch.randn(N, 2, r, V, generator=g).log_softmax(-1)
    log_w = torch.randn(N, r, generator=g).log_softmax(-1)
    x = torch.randint(V, (N,), generator=g)
    lw, q = ref.cp_posterior(log_w, comp[:, 0], x, comp[:, 1])
    post = log_w.exp() * comp[:, 0].exp()[torch.arange(N), :, x]
    post = post / post.sum(-1, keepdim=True)
    assert torch.allclose(q, (post[:, :, None] * comp[:, 1].exp()).sum(1), atol=1e-6)
    assert torch.allclose(lw.softmax(-1), post, atol=1e-6)


def test_reference_u_features():
    u = torch.rand(100)
    bits = ref.u_features(u, "binary")
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal((bits.long() << torch.arange(32)).sum(-1), u.view(torch.int32).long())
    cos = ref.u_features(u, "quarter_cos", 32)
    assert torch.allclose(cos[:, 2], torch.cos(3 * math.pi * u), atol=1e-5)
    with pytest.raises(ValueError):
        ref.u_features(u, "sawtooth")
