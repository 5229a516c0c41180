"""What a real server batch holds, all at once, with our drafts: greedy requests (with penalties, logprobs, stop
strings, max_tokens 1, a prompt that fills max_model_len) answer exactly as plain vLLM; sampled requests (top-k,
top-p, penalties, n > 1) with seeds answer the same run to run; a tiny KV cache that forces preemption changes
nothing; a request vLLM refuses with speculation (min_p) fails alone."""
import pytest
from tiny_models import stdlib_text
from vllm_runs import generate

from vllm_ptp.bench.measure import engine

pytestmark = pytest.mark.engine

MAX_MODEL_LEN = 256
LINES = [line.strip() for line in stdlib_text(30_000).splitlines() if len(line.strip()) > 20]


def long_prompt(target, tokens: int) -> str:
    """A prompt of exactly `tokens` tokens."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(target)
    ids = tokenizer(" ".join(LINES), add_special_tokens=False)["input_ids"][:tokens]
    text = tokenizer.decode(ids)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == tokens
    return text


def mixed_batch(target, stop: str):
    """(prompt, SamplingParams) per request: greedy ones first (their outputs must be plain vLLM's), then seeded
    sampled ones (their outputs must repeat run to run)."""
    from vllm import SamplingParams
    greedy = dict(temperature=0, max_tokens=40, ignore_eos=True)
    sampled = dict(temperature=1.0, max_tokens=40, ignore_eos=True)
    near_full = MAX_MODEL_LEN - 12
    requests = [
        (LINES[0], SamplingParams(**greedy)),
        (LINES[1], SamplingParams(**greedy, repetition_penalty=1.3)),
        (LINES[2], SamplingParams(**greedy, presence_penalty=0.8, frequency_penalty=0.5)),
        (LINES[3], SamplingParams(**greedy, logprobs=3)),
        (LINES[0], SamplingParams(temperature=0, max_tokens=40, stop=[stop])),
        (LINES[4], SamplingParams(temperature=0, max_tokens=1)),
        (long_prompt(target, near_full), SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)),
        (LINES[5], SamplingParams(**sampled, seed=11)),
        (LINES[6], SamplingParams(**{**sampled, "temperature": 0.8}, top_k=20, seed=12)),
        (LINES[7], SamplingParams(**sampled, top_p=0.9, seed=13)),
        (LINES[8], SamplingParams(**sampled, top_k=50, top_p=0.8, repetition_penalty=1.2, seed=14)),
        (LINES[9], SamplingParams(**sampled, n=3, seed=15)),
    ]
    return requests, 7  # the first 7 are greedy


def answers(llm, requests) -> list:
    """Per request: every completion's token ids, and the greedy one's logprobs of its own tokens."""
    results = llm.generate([p for p, _ in requests], [s for _, s in requests], use_tqdm=False)
    out = []
    for result in results:
        completions = [list(c.token_ids) for c in result.outputs]
        first = result.outputs[0]
        chosen = [step[t].logprob for step, t in zip(first.logprobs, first.token_ids)] if first.logprobs else None
        out.append({"tokens": completions, "text": first.text, "logprobs": chosen, "finish": first.finish_reason})
    return out


@pytest.fixture(scope="module")
def plain(tiny_target):
    """Plain vLLM's answers to the mixed batch, and the stop string (a piece of plain's greedy text for LINES[0])."""
    from vllm import SamplingParams
    with engine(tiny_target, None, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN) as live:
        text = live.llm.generate([LINES[0]], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                                 use_tqdm=False)[0].outputs[0].text
        stop = text[len(text) // 2: len(text) // 2 + 3]
        requests, n_greedy = mixed_batch(tiny_target, stop)
        return {"greedy": n_greedy, "answers": answers(live.llm, requests), "stop": stop}


def assert_greedy_as_plain(got, plain):
    for i in range(plain["greedy"]):
        mine, theirs = got[i], plain["answers"][i]
        assert mine["tokens"] == theirs["tokens"], f"greedy request {i}"
        assert mine["finish"] == theirs["finish"], i
        if theirs["logprobs"] is not None:
            assert mine["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-3), i


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_mixed_batch(tiny_target, draft, plain, request):
    folder = request.getfixturevalue(draft)
    requests, _ = mixed_batch(tiny_target, plain["stop"])
    with engine(tiny_target, {"model": str(folder), "num_speculative_tokens": 3}, dtype="float32",
                enforce_eager=True, max_model_len=MAX_MODEL_LEN) as live:
        first = answers(live.llm, requests)
        second = answers(live.llm, mixed_batch(tiny_target, plain["stop"])[0])
        drafted = live.llm.get_metrics()
    assert_greedy_as_plain(first, plain)
    assert first[4]["finish"] == "stop" and plain["stop"] not in first[4]["text"]
    assert len(first[5]["tokens"][0]) == 1
    assert [len(c) for c in first[-1]["tokens"]] == [40, 40, 40] and len({tuple(c) for c in first[-1]["tokens"]}) > 1
    assert second == first, "seeded requests answered differently on the second run"
    counters = {m.name: m.value for m in drafted if hasattr(m, "value")}
    assert counters["vllm:spec_decode_num_accepted_tokens"] > 0


def fill_draft_kv_cache(worker, value: float) -> int:
    """(run in the engine's worker) Sets every slot of the draft's KV cache to `value`; returns how many tensors."""
    tensors = [m.kv_cache for m in worker.model_runner.drafter.model.modules() if hasattr(m, "kv_cache")]
    tensors = [t for kv in tensors for t in (kv if isinstance(kv, (list, tuple)) else [kv])]
    for tensor in tensors:
        tensor.fill_(value)
    return len(tensors)


def test_ptp_drafts_read_only_draft_kv_they_wrote(tiny_target, tiny_ptp, plain):
    """What the draft KV cache held before a request must not reach its drafts. The batch has a request that
    reaches max_model_len, where vLLM 0.32 skips drafting for the whole batch and leaves holes in every other
    request's draft KV (vllm_integration.runner.input_fits_in_drafter): the same batch, served
    once over a zeroed and once over a garbage-filled draft cache, must answer and accept identically."""
    requests, _ = mixed_batch(tiny_target, plain["stop"])
    runs = []
    with engine(tiny_target, {"model": str(tiny_ptp), "num_speculative_tokens": 3}, dtype="float32",
                enforce_eager=True, max_model_len=MAX_MODEL_LEN) as live:
        for value in (0.0, 1e3):
            assert live.llm.collective_rpc(fill_draft_kv_cache, args=(value,)) == [1]
            before = {m.name: m.value for m in live.llm.get_metrics() if hasattr(m, "value")}
            got = answers(live.llm, requests)
            after = {m.name: m.value for m in live.llm.get_metrics() if hasattr(m, "value")}
            runs.append((got, after["vllm:spec_decode_num_accepted_tokens"]
                         - before.get("vllm:spec_decode_num_accepted_tokens", 0)))
    assert runs[1] == runs[0]


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_preemption_under_a_tiny_kv_cache(tiny_target, draft, plain, request):
    """12 KV blocks of 32 tokens cannot hold the batch at once: the scheduler preempts and recomputes requests
    (the draft's KV lives in the same pool for PTP) and greedy answers stay plain vLLM's."""
    from vllm import SamplingParams
    folder = request.getfixturevalue(draft)
    prompts = LINES[:8]
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
    reference = generate(tiny_target, prompts, params, max_model_len=MAX_MODEL_LEN)
    with engine(tiny_target, {"model": str(folder), "num_speculative_tokens": 3}, dtype="float32",
                enforce_eager=True, max_model_len=MAX_MODEL_LEN, block_size=32, num_gpu_blocks_override=12) as live:
        outputs = [list(r.outputs[0].token_ids) for r in live.llm.generate(prompts, params, use_tqdm=False)]
        preemptions = sum(m.value for m in live.llm.get_metrics() if m.name == "vllm:num_preemptions")
    assert preemptions > 0, "the tiny cache did not force a preemption: the test does not test it"
    assert outputs == reference.outputs


def test_request_vllm_refuses_with_speculation_fails_alone(tiny_target, tiny_ptp):
    """vLLM 0.32 refuses min_p with any speculative method: that request gets the error, the engine goes on."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    with engine(tiny_target, {"model": str(tiny_ptp)}, dtype="float32", enforce_eager=True,
                max_model_len=MAX_MODEL_LEN) as live:
        with pytest.raises(VLLMValidationError, match="min_p"):
            live.llm.generate([LINES[0]], SamplingParams(temperature=1.0, min_p=0.1, max_tokens=8), use_tqdm=False)
        after = live.llm.generate([LINES[0]], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                                  use_tqdm=False)
    assert len(after[0].outputs[0].token_ids) == 8


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_seeded_request_with_chunked_prefill(tiny_target, draft, request):
    """A seeded request whose prompt is prefilled in several chunks (vLLM 0.32 CPU would die rewinding its
    generator, see vllm_integration.cpu_sampler_fixes) is served and answers the same in a second engine. CP drafts do not depend on how the
    prompt was chunked, so there it also answers as with a one-chunk prefill (PTP's draft KV of the prompt is
    computed chunk by chunk, so its probabilistic drafts, and with them a seeded answer, may differ)."""
    from vllm import SamplingParams
    folder = request.getfixturevalue(draft)
    prompt = long_prompt(tiny_target, 200)
    params = SamplingParams(temperature=1.0, seed=7, max_tokens=24, ignore_eos=True)
    spec = {"model": str(folder), "num_speculative_tokens": 3}
    chunking = dict(max_model_len=MAX_MODEL_LEN, max_num_batched_tokens=64, enable_chunked_prefill=True)
    chunked = generate(tiny_target, [prompt], params, spec, **chunking)
    assert len(chunked.outputs[0]) == 24
    assert generate(tiny_target, [prompt], params, spec, **chunking).outputs == chunked.outputs
    if draft == "tiny_cp":
        assert generate(tiny_target, [prompt], params, spec, max_model_len=MAX_MODEL_LEN).outputs == chunked.outputs
