"""Distillation data for PTP drafts: the target's own continuations and its states along them.

Step 1 (vLLM, no speculation): the target continues each prompt at a cycle of temperatures; the token ids are written
per shard of prompts (`sequences_NNNNN.json`). Step 2 (transformers, float32, teacher-forced): for every token of
prompt + continuation, the target's residual stream entering each auxiliary layer (what vLLM hands an EAGLE-3 draft)
and its final post-norm state (from which training recomputes the teacher's distributions, hence the CDF intervals of
the sampled tokens, for any draft vocabulary). Both steps resume shard by shard.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vllm_ptp.training.teacher import (SHARD_PROMPTS, chat_prompts, sample_continuations, shard_temperatures,
                                       teacher_engine)


def generate_sequences(target: str | Path, conversations: list[list[dict]], out_dir: str | Path,
                       temperatures: tuple[float, ...], max_new_tokens: int, max_prompt_tokens: int,
                       seed: int) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = chat_prompts(target, conversations, max_prompt_tokens)
    shards = [prompts[i:i + SHARD_PROMPTS] for i in range(0, len(prompts), SHARD_PROMPTS)]
    todo = [i for i in range(len(shards)) if not (out_dir / f"sequences_{i:05d}.json").exists()]
    if not todo:
        return
    llm = teacher_engine(target, max_prompt_tokens + max_new_tokens + 8, seed)
    for i in tqdm(todo, desc="teacher continuations"):
        temps = shard_temperatures(i, len(shards[i]), temperatures)
        completions = sample_continuations(llm, shards[i], temps, max_new_tokens)
        record = {"prompts": shards[i], "completions": completions, "temperatures": temps}
        (out_dir / f"sequences_{i:05d}.json").write_text(json.dumps(record))


def record_states(target: str | Path, out_dir: str | Path, aux_layers: list[int], device: str = "cpu") -> None:
    """Step 2 for every sequences shard that has no states shard yet."""
    out_dir = Path(out_dir)
    todo = [p for p in sorted(out_dir.glob("sequences_*.json"))
            if not (out_dir / p.name.replace("sequences_", "states_").replace(".json", ".safetensors")).exists()]
    if not todo:
        return
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).to(device).eval()
    for path in tqdm(todo, desc="target states"):
        record = json.loads(path.read_text())
        tokens, starts, aux, final = [], [0], [], []
        for prompt, completion in zip(record["prompts"], record["completions"]):
            ids = prompt + completion
            with torch.inference_mode():
                out = model.model(torch.tensor([ids], device=device), output_hidden_states=True)
            # hidden_states[i] is the residual stream entering layer i: vLLM's auxiliary hidden state for layer i
            aux.append(torch.stack([out.hidden_states[i][0] for i in aux_layers], dim=1).to(torch.bfloat16).cpu())
            final.append(out.last_hidden_state[0].to(torch.bfloat16).cpu())
            tokens += ids
            starts.append(len(tokens))
        shard = {"tokens": torch.tensor(tokens, dtype=torch.int32), "starts": torch.tensor(starts),
                 "prompt_lens": torch.tensor([len(p) for p in record["prompts"]], dtype=torch.int32),
                 "temperatures": torch.tensor(record["temperatures"], dtype=torch.float32),
                 "aux": torch.cat(aux), "final": torch.cat(final)}
        save_file(shard, str(path.with_name(path.name.replace("sequences_", "states_").replace(".json",
                                                                                              ".safetensors"))))


def generate_ptp_teacher_data(target: str | Path, conversations: list[list[dict]], out_dir: str | Path,
                              aux_layers: list[int], temperatures: tuple[float, ...] = (0.0, 0.7, 1.0),
                              max_new_tokens: int = 192, max_prompt_tokens: int = 384, seed: int = 0,
                              device: str = "cpu") -> Path:
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    meta = {"target": str(target), "aux_layers": list(aux_layers), "temperatures": list(temperatures),
            "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens, "seed": seed}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("aux_layers") != meta["aux_layers"]:
            raise ValueError(f"{meta_path}: recorded for auxiliary layers {old.get('aux_layers')}, asked for "
                             f"{meta['aux_layers']}; use another --teacher-dir")
    generate_sequences(target, conversations, out_dir, temperatures, max_new_tokens, max_prompt_tokens, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))
    record_states(target, out_dir, aux_layers, device)
    return out_dir


@dataclass
class PTPTeacherData:
    """All sequences concatenated: sequence s is tokens[starts[s]:starts[s+1]], its first prompt_lens[s] tokens the
    prompt, sampled at temperatures[s]. aux [T, n_aux, H] and final [T, H] are the target's states at each token."""
    tokens: torch.Tensor
    starts: torch.Tensor
    prompt_lens: torch.Tensor
    temperatures: torch.Tensor
    aux: torch.Tensor
    final: torch.Tensor
    aux_layers: list[int]

    @property
    def num_sequences(self) -> int:
        return len(self.prompt_lens)


def load_ptp_teacher_data(data_dir: str | Path) -> PTPTeacherData:
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("states_*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no PTP teacher states (states_*.safetensors)")
    shards = [load_file(str(f)) for f in files]
    starts, offset = [torch.zeros(1, dtype=torch.int64)], 0
    for s in shards:
        starts.append(s["starts"][1:] + offset)
        offset += len(s["tokens"])
    meta = json.loads((data_dir / "meta.json").read_text())
    return PTPTeacherData(tokens=torch.cat([s["tokens"] for s in shards]).long(), starts=torch.cat(starts),
                          prompt_lens=torch.cat([s["prompt_lens"] for s in shards]).long(),
                          temperatures=torch.cat([s["temperatures"] for s in shards]),
                          aux=torch.cat([s["aux"] for s in shards]), final=torch.cat([s["final"] for s in shards]),
                          aux_layers=meta["aux_layers"])
