"""Distillation data: the target writes the continuations, then one teacher-forced pass records its hidden states.

Continuations are sampled by the target itself in vLLM (no speculation) at a cycle of temperatures, so the heads learn
the target's own distribution rather than the dataset's. A second, teacher-forced pass of the target (transformers,
float32) records the final post-norm hidden state h_i at every completion position. One training example is
(h_i, x_{i+1}, x_{i+2..i+1+MAX_HEADS}): the state that produced token x_{i+1}, that token, and the tokens after it
(-1 past the end of the sequence). Shards of a few dozen prompts are written as they finish, so a killed run resumes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vllm_ptp.data import chat_prompts
from vllm_ptp.training.continuations import sample_continuations, teacher_engine

MAX_HEADS = 8
SHARD_PROMPTS = 64


def examples_from_sequence(hidden: torch.Tensor, tokens: list[int], prompt_len: int) -> dict[str, torch.Tensor]:
    """hidden [L, H] for tokens [L] -> training examples for every position whose next token is a completion token."""
    L = len(tokens)
    positions = torch.arange(prompt_len - 1, L - 1)
    ids = torch.tensor(tokens + [-1] * (MAX_HEADS + 1))
    labels = torch.stack([ids[positions + 2 + j] for j in range(MAX_HEADS)], dim=1)
    return {"hidden": hidden[positions].to(torch.bfloat16), "last_token": ids[positions + 1].int(),
            "labels": labels.int()}


def generate_teacher_data(target: str | Path, conversations: list[list[dict]], out_dir: str | Path,
                          temperatures: tuple[float, ...] = (0.0, 0.7, 1.0), max_new_tokens: int = 192,
                          max_prompt_tokens: int = 384, seed: int = 0, device: str = "cpu") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM
    prompts = chat_prompts(target, conversations, tokenize=True, max_prompt_tokens=max_prompt_tokens)
    shards = [prompts[i:i + SHARD_PROMPTS] for i in range(0, len(prompts), SHARD_PROMPTS)]
    todo = [i for i in range(len(shards)) if not (out_dir / f"shard_{i:05d}.safetensors").exists()]
    if todo:
        llm = teacher_engine(target, max_prompt_tokens + max_new_tokens + 8, seed)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).to(device).eval()
        for i in tqdm(todo, desc="teacher shards"):
            sequences = sample_continuations(llm, shards[i], shard_temperatures(i, len(shards[i]), temperatures),
                                             max_new_tokens)
            parts = []
            for prompt, completion, _ in sequences:
                tokens = prompt + completion
                with torch.inference_mode():
                    hidden = model.model(torch.tensor([tokens], device=device)).last_hidden_state[0].cpu()
                parts.append(examples_from_sequence(hidden, tokens, len(prompt)))
            shard = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            save_file(shard, str(out_dir / f"shard_{i:05d}.safetensors"))
    meta = {"target": str(target), "prompts": len(prompts), "temperatures": list(temperatures),
            "max_new_tokens": max_new_tokens, "seed": seed}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def shard_temperatures(shard: int, n: int, temperatures: tuple[float, ...]) -> list[float]:
    """The cycle of temperatures over all prompts, continued across shards."""
    return [temperatures[(shard * SHARD_PROMPTS + j) % len(temperatures)] for j in range(n)]


def load_teacher_data(data_dir: str | Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(data_dir).glob("shard_*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no teacher shards (shard_*.safetensors)")
    shards = [load_file(str(f)) for f in files]
    return {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
