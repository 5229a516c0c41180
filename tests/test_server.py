"""The OpenAI-compatible server serves CP heads and PTP drafts from one flag: greedy completions (plain, chat,
streamed) are plain vLLM's, bad requests are refused without harm, seeded requests survive chunked prefill, /metrics
counts acceptance per position, and a bad draft stops the server at start-up with our error."""
import json
import sys
import urllib.request

import pytest

from vllm_ptp.bench.server import (ServerStartError, accepted_per_position, get_text, log_tail, metric_total,
                                   openai_server, post_json)
from vllm_runs import generate

pytestmark = [pytest.mark.engine, pytest.mark.server]

PROMPT = "def parse(self, text):"
CHAT = [{"role": "user", "content": "Write a function that sorts a list."}]
MAX_TOKENS = 32
# float32 keeps greedy outputs token-identical to plain vLLM; multiprocessing as a deployed server runs
SERVER_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "512")
SERVER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
DRAFTS = {"tiny_cp": 3, "tiny_ptp": 4}  # fixture -> draft tokens per step (CP heads, PTP slots)


def greedy(model: str, **body) -> dict:
    return {"model": model, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, **body}


@pytest.fixture(scope="module")
def plain_texts(tiny_target):
    """Plain vLLM's greedy continuations of PROMPT and of the chat-templated CHAT (one in-process engine)."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    chat_prompt = AutoTokenizer.from_pretrained(tiny_target).apply_chat_template(CHAT, add_generation_prompt=True,
                                                                                   tokenize=False)
    run = generate(tiny_target, [PROMPT, chat_prompt],
                   SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    return {"completion": run.texts[0], "chat": run.texts[1]}


@pytest.fixture(scope="module", params=sorted(DRAFTS))
def served(request, tiny_target, tmp_path_factory):
    """(server, model name, draft tokens per step) for one draft kind; one server per kind for the module."""
    draft = request.getfixturevalue(request.param)
    log = tmp_path_factory.mktemp(request.param) / "server.log"
    with openai_server(tiny_target, *SERVER_ARGS, "--speculative-config", json.dumps({"model": str(draft)}),
                       env=SERVER_ENV, log_path=log) as server:
        yield server, str(tiny_target), DRAFTS[request.param]


def test_greedy_completion_is_plain_vllms(served, plain_texts):
    server, model, _ = served
    status, answer = post_json(f"{server.base_url}/v1/completions", greedy(model, prompt=PROMPT))
    assert status == 200, answer
    assert answer["choices"][0]["text"] == plain_texts["completion"]


def test_greedy_chat_completion_is_plain_vllms(served, plain_texts):
    server, model, _ = served
    status, answer = post_json(f"{server.base_url}/v1/chat/completions", greedy(model, messages=CHAT))
    assert status == 200, answer
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == plain_texts["chat"]


def test_streamed_completion_adds_up_to_the_greedy_text(served, plain_texts):
    server, model, _ = served
    events = streamed_events(f"{server.base_url}/v1/completions", greedy(model, prompt=PROMPT, stream=True))
    assert len(events) > 1, "the answer came in one piece, not streamed"
    assert "".join(event["choices"][0]["text"] for event in events) == plain_texts["completion"]


def streamed_events(url: str, body: dict) -> list[dict]:
    """The JSON events of a server-sent-event answer, up to `data: [DONE]` (which must come)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                return events
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    raise AssertionError(f"the stream ended without data: [DONE] after {len(events)} events")


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_p": 2}, {"n": 0}])
def test_invalid_sampling_parameter_is_refused_and_the_server_keeps_serving(served, bad):
    server, model, _ = served
    status, answer = post_json(f"{server.base_url}/v1/completions", {**greedy(model, prompt=PROMPT), **bad})
    assert status == 400, answer
    assert answer["error"]["message"], answer
    status, answer = post_json(f"{server.base_url}/v1/completions", greedy(model, prompt=PROMPT, max_tokens=4))
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 4


def test_metrics_count_accepted_tokens_per_position(served):
    server, model, k = served
    status, answer = post_json(f"{server.base_url}/v1/completions", greedy(model, prompt=PROMPT))
    assert status == 200, answer
    metrics = get_text(f"{server.base_url}/metrics")
    assert metric_total(metrics, "vllm:spec_decode_num_draft_tokens_total") > 0, "the server did not speculate"
    per_position = accepted_per_position(metrics)
    assert len(per_position) == k
    accepted = metric_total(metrics, "vllm:spec_decode_num_accepted_tokens_total")
    assert accepted > 0, "no draft token was ever accepted"
    assert sum(per_position) == accepted


def test_seeded_requests_prefilled_in_chunks_are_served(served, tiny_target):
    """Eight 400-token prompts in one request exceed the server's token budget per step (2048), so some are
    prefilled in chunks; seeded sampling must survive that (vLLM 0.32 rewinds the generator of a request whose
    prefill is unfinished, which a CPU generator refuses: the engine died and took the server with it)."""
    from transformers import AutoTokenizer
    server, model, _ = served
    tokenizer = AutoTokenizer.from_pretrained(tiny_target)
    long_text = tokenizer.decode(tokenizer(PROMPT * 80)["input_ids"][:400])
    prompts = [f"# request {i}\n{long_text}" for i in range(8)]  # distinct, so no prefix-cache hits
    body = {"model": model, "prompt": prompts, "max_tokens": 4, "temperature": 1.0, "seed": 1}
    status, answer = post_json(f"{server.base_url}/v1/completions", body)
    assert status == 200, answer
    assert len(answer["choices"]) == len(prompts)
    status, answer = post_json(f"{server.base_url}/v1/completions", greedy(model, prompt=PROMPT, max_tokens=4))
    assert status == 200, answer


def test_bad_draft_stops_the_server_at_start_up(tiny_target, tmp_path):
    missing = tmp_path / "no_such_draft"
    log = tmp_path / "server.log"
    with pytest.raises(ServerStartError, match="exited with code"):
        with openai_server(tiny_target, *SERVER_ARGS, "--speculative-config",
                           json.dumps({"method": "ptp", "model": str(missing)}), env=SERVER_ENV, log_path=log):
            pass
    errors = [line for line in log.read_text().splitlines() if "CheckpointError" in line and str(missing) in line]
    assert errors, f"no CheckpointError naming {missing} in the log:\n{log_tail(log)}"


def test_serve_command_passes_every_argument_to_vllms_server(monkeypatch):
    from vllm_ptp import cli
    executed = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: executed.append((path, argv)))
    vllm_args = ["--port", "8001", "--speculative-config", '{"model": "d"}', "-tp", "1", "--help"]
    cli.main(["serve", "some/model", *vllm_args])
    assert executed == [(sys.executable, [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                                          "--model", "some/model", *vllm_args])]
