"""The OpenAI-compatible server serves CP heads from one flag; its greedy completion is plain vLLM's."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from vllm_runs import generate

PROMPT = "def parse(self, text):"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_server_with_cp_heads(tiny_target, tiny_cp, tmp_path):
    from vllm import SamplingParams
    port = free_port()
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_target), "--host",
         "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
         "--speculative-config", json.dumps({"model": str(tiny_cp)})], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "server did not come up in 300 s"
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        body = {"model": str(tiny_target), "prompt": PROMPT, "max_tokens": 32, "temperature": 0, "ignore_eos": True}
        request = urllib.request.Request(f"{base}/v1/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        served = json.load(urllib.request.urlopen(request, timeout=120))["choices"][0]["text"]
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    finally:
        server.terminate()
        server.wait(timeout=60)
    plain = generate(tiny_target, [PROMPT], SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))
    assert served == plain.texts[0]
    drafts = [line for line in metrics.splitlines() if line.startswith("vllm:spec_decode_num_draft_tokens_total")]
    assert drafts and float(drafts[0].split()[-1]) > 0, "the server did not speculate"
