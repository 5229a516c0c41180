"""Client for examples/serve_smollm2.sh: a completion, a streamed chat answer, and the server's acceptance counters.

    python examples/client.py [--base-url http://127.0.0.1:8000]
"""
import argparse
import json
import urllib.request


def post(url: str, body: dict) -> urllib.request.addinfourl:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    base = parser.parse_args().base_url
    model = json.load(urllib.request.urlopen(f"{base}/v1/models"))["data"][0]["id"]

    completion = json.load(post(f"{base}/v1/completions",
                                {"model": model, "prompt": "The capital of France is", "max_tokens": 16,
                                 "temperature": 0}))
    print("completion:", completion["choices"][0]["text"])

    print("chat (streamed): ", end="", flush=True)
    with post(f"{base}/v1/chat/completions", {"model": model, "stream": True, "max_tokens": 64, "temperature": 0.7,
                                              "messages": [{"role": "user", "content": "Name three rivers."}]}) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                print(delta.get("content") or "", end="", flush=True)
    print()

    metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    for line in metrics.splitlines():
        if line.startswith("vllm:spec_decode_num_"):
            print(line)


if __name__ == "__main__":
    main()
