"""Which facts about a context match predict its acceptance: vLLM's ngram drafting replayed on the target's greedy
text (T = 0, where a draft is accepted exactly while it equals that text), by position and matched suffix length.
The numbers behind vllm_ptp/proposers/match_acceptance.py and docs/serving.md.

    .venv/bin/python examples/match_acceptance_offline.py [--prompts 24] [--out runs/match_acceptance]

Held-out chat (sharegpt) and code (humaneval) prompts, after the 8 the bench uses; about 15 minutes on 2 CPU cores.
"""
import argparse
import collections
import json
import pathlib
from types import SimpleNamespace

import numpy as np

K = 3
LENGTHS = (4, 3, 2)  # the bench's prompt_lookup_max .. prompt_lookup_min, longest first
BENCH_PROMPTS = 8


def greedy_texts(n_prompts: int, max_tokens: int, first: int = BENCH_PROMPTS) -> dict:
    """{dataset: [(prompt ids, greedy output ids)]} from the embedded default target in float32, for the held-out
    prompts first .. first + n_prompts - 1 (by default those after the bench's batch-1 prompts)."""
    import torch
    from transformers import AutoModelForCausalLM

    from vllm_ptp.data import chat_prompts, load_conversations
    from vllm_ptp.embedded import default_target_dir
    target = default_target_dir()
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    texts = {}
    for dataset in ("sharegpt", "humaneval"):
        conversations = load_conversations(dataset, "heldout", first + n_prompts, seed=0)[first:]
        texts[dataset] = []
        for ids in chat_prompts(target, conversations, tokenize=True):
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
            texts[dataset].append((ids, out[0, len(ids):].tolist()))
    return texts


def ngram(n: int):
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer
    return NgramProposer(SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=n, prompt_lookup_max=n, num_speculative_tokens=K),
        model_config=SimpleNamespace(max_model_len=8192), scheduler_config=SimpleNamespace(max_num_seqs=1),
        parallel_config=SimpleNamespace(tensor_parallel_size=1)))


def replay(texts: dict) -> list[tuple[str, int, int, int]]:
    """Greedy speculative decoding with ngram drafts of k = 3 -> (dataset, matched suffix length, accepted, drafted)
    per step that had a match."""
    proposers = {n: ngram(n) for n in LENGTHS}
    steps = []
    for dataset, rows in texts.items():
        for prompt, output in rows:
            tokens = list(prompt) + list(output)
            t = len(prompt) + 1  # the first output token comes from the prefill
            while t < len(tokens):
                history = np.array([tokens[:t]], dtype=np.int32)
                draft, suffix = [], 0
                for n in LENGTHS:
                    found = proposers[n].propose(K, [[0]], np.array([t], dtype=np.int32), history)[0]
                    if found:
                        draft, suffix = list(found)[:len(tokens) - t], n
                        break
                accepted = 0
                while accepted < len(draft) and draft[accepted] == tokens[t + accepted]:
                    accepted += 1
                if draft:
                    steps.append((dataset, suffix, accepted, len(draft)))
                t += accepted + 1
    return steps


def report(steps) -> str:
    lines = []
    for dataset in ("sharegpt", "humaneval"):
        groups = collections.defaultdict(list)
        for step in steps:
            if step[0] == dataset:
                groups["any"].append(step)
                groups[f"{step[1]}-token"].append(step)
        for name, group in groups.items():
            through = [np.mean([s[2] >= j for s in group if s[3] >= j]) for j in range(1, K + 1)]
            lines.append(f"{dataset} {name} matches: {len(group)} steps, accepted through position 1 / 2 / 3: "
                         + " / ".join(f"{p:.2f}" for p in through))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=24, help="per dataset")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/match_acceptance"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "greedy.json"
    if not cache.exists():
        cache.write_text(json.dumps(greedy_texts(args.prompts, args.max_tokens)))
    text = report(replay(json.loads(cache.read_text())))
    (args.out / "report.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
