"""Distillation data for PTP drafts: the target's own continuations and its states along them.

Step 1 (vLLM, no speculation, large batches): the target continues each prompt at a cycle of temperatures, several
samples per prompt at T > 0; the token ids are written per shard of prompts (`sequences_NNNNN.json`). Step 2
(transformers, batched, bf16 by default, teacher-forced): for every token of prompt + continuation, the target's
residual stream entering each auxiliary layer (what vLLM hands an EAGLE-3 draft) and its final post-norm state (from
which training recomputes the teacher's distributions, hence the CDF intervals of the sampled tokens, for any draft
vocabulary). Both steps resume shard by shard, and step 2 can follow step 1 in another process while it runs.

Training reads the states through `TeacherStates`, which memory-maps the shards and reads one sequence at a time, so
its memory does not grow with the data.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vllm_ptp.data import chat_prompts
from vllm_ptp.training.continuations import sample_continuations, teacher_engine

SEQUENCES = "sequences_{:05d}.json"
STATES = "states_{:05d}.safetensors"
BYTES_PER_STATE_VALUE = 2  # bf16 on disk


@dataclass
class TeacherSettings:
    """What the teacher data are made of; recorded in meta.json, and a folder refuses other settings."""
    target: str
    aux_layers: list[int]
    temperatures: tuple[float, ...] = (0.0, 0.7, 1.0)
    samples_per_prompt: int = 1  # continuations per prompt at T > 0 (T = 0 gives one)
    max_new_tokens: int = 192
    max_prompt_tokens: int = 768
    shard_prompts: int = 256  # prompts per vLLM generate call: the batch the CPU engine runs at
    seed: int = 0
    state_dtype: str = "bfloat16"  # the target's dtype in the teacher-forced pass

    def check(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if self.state_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"state_dtype must be 'bfloat16' or 'float32', got {self.state_dtype!r}")

    def record(self) -> dict:
        return {"target": str(self.target), "aux_layers": list(self.aux_layers),
                "temperatures": list(self.temperatures), "samples_per_prompt": self.samples_per_prompt,
                "max_new_tokens": self.max_new_tokens, "max_prompt_tokens": self.max_prompt_tokens,
                "shard_prompts": self.shard_prompts, "seed": self.seed, "state_dtype": self.state_dtype}


def check_meta(out_dir: Path, settings: TeacherSettings) -> None:
    """Write meta.json, or refuse a folder made with other settings (resuming must not mix data)."""
    meta_path = out_dir / "meta.json"
    meta = settings.record()
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        differing = [k for k in meta if k != "target" and k in old and old[k] != meta[k]]
        if differing:
            raise ValueError(f"{meta_path}: made with {', '.join(f'{k}={old[k]}' for k in differing)}, asked for "
                             f"{', '.join(f'{k}={meta[k]}' for k in differing)}; use another teacher folder")
        meta = {**old, **meta}
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))


def generate_sequences(settings: TeacherSettings, conversations: list[list[dict]], out_dir: str | Path,
                       max_hours: float | None = None) -> int:
    """Step 1 for every shard of prompts not yet written, stopping at the first shard boundary after `max_hours`
    (at least one shard is written, however small the budget) -> shards written in all."""
    out_dir = Path(out_dir)
    # A resumed generation is not done: a state pass following it must not stop at an earlier run's marker.
    (out_dir / "sequences_done").unlink(missing_ok=True)
    prompts = chat_prompts(settings.target, conversations, tokenize=True,
                           max_prompt_tokens=settings.max_prompt_tokens)
    n = settings.shard_prompts
    shards = [prompts[i:i + n] for i in range(0, len(prompts), n)]
    todo = [i for i in range(len(shards)) if not (out_dir / SEQUENCES.format(i)).exists()]
    if todo:
        started = time.time()
        llm = teacher_engine(settings.target, settings.max_prompt_tokens + settings.max_new_tokens + 8, settings.seed,
                             max_num_seqs=settings.shard_prompts * settings.samples_per_prompt)
        for i in tqdm(todo, desc="teacher continuations"):
            temps = [settings.temperatures[(i * n + j) % len(settings.temperatures)] for j in range(len(shards[i]))]
            record = continuations_record(llm, shards[i], temps, settings)
            tmp = out_dir / (SEQUENCES.format(i) + ".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(out_dir / SEQUENCES.format(i))
            if max_hours is not None and time.time() - started > max_hours * 3600:
                break
    (out_dir / "sequences_done").touch()  # a state pass that follows this one may stop once it has caught up
    return sum((out_dir / SEQUENCES.format(i)).exists() for i in range(len(shards)))


def continuations_record(llm, prompts: list[list[int]], temperatures: list[float], settings: TeacherSettings
                         ) -> dict:
    """-> {"prompts", "completions", "temperatures"}, one entry per sequence."""
    sequences = sample_continuations(llm, prompts, temperatures, settings.max_new_tokens, settings.samples_per_prompt)
    return {"prompts": [p for p, _, _ in sequences], "completions": [c for _, c, _ in sequences],
            "temperatures": [t for _, _, t in sequences]}


def record_states(settings: TeacherSettings, out_dir: str | Path, device: str = "cpu", tokens_per_batch: int = 4096,
                  follow: bool = False) -> None:
    """Step 2 for every sequences shard that has no states shard yet; with `follow`, keep waiting for new shards
    until step 1 writes `sequences_done`."""
    out_dir = Path(out_dir)
    from transformers import AutoModelForCausalLM
    model = None
    while True:
        todo = [p for p in sorted(out_dir.glob("sequences_*.json")) if not _states_path(p).exists()]
        if not todo:
            if not follow or (out_dir / "sequences_done").exists():
                return
            time.sleep(30)
            continue
        if model is None:
            dtype = getattr(torch, settings.state_dtype)
            model = AutoModelForCausalLM.from_pretrained(settings.target, dtype=dtype).to(device).eval()
        for path in tqdm(todo, desc="target states"):
            if not _claim(path):
                continue  # another state pass (e.g. on the other core) has it
            try:
                shard = states_of_shard(model, json.loads(path.read_text()), settings.aux_layers, device,
                                        tokens_per_batch)
                tmp = _states_path(path).with_suffix(f".{os.getpid()}.tmp")
                save_file(shard, str(tmp))
                tmp.replace(_states_path(path))
            finally:
                _claim_path(path).unlink(missing_ok=True)


def _claim_path(sequences_path: Path) -> Path:
    return sequences_path.with_suffix(".claim")


def _claim(sequences_path: Path) -> bool:
    """Take a shard for this process, so that several state passes can share a folder; a claim whose process is
    gone (a killed run) is taken over."""
    claim = _claim_path(sequences_path)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(claim.read_text() or 0)
                os.kill(pid, 0)
                return False
            except (ValueError, ProcessLookupError, FileNotFoundError):
                claim.unlink(missing_ok=True)  # its process is gone: take it over
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        if _states_path(sequences_path).exists():  # finished by another pass after our listing
            claim.unlink(missing_ok=True)
            return False
        return True
    return False


def _states_path(sequences_path: Path) -> Path:
    return sequences_path.with_name(sequences_path.name.replace("sequences_", "states_").replace(".json",
                                                                                                ".safetensors"))


@torch.inference_mode()
def states_of_shard(model, record: dict, aux_layers: list[int], device: str, tokens_per_batch: int) -> dict:
    """The target's states along every sequence of a shard, in batches of similar length (right-padded: causal
    attention keeps the real tokens' states exact up to the batch's rounding)."""
    sequences = [p + c for p, c in zip(record["prompts"], record["completions"])]
    order = sorted(range(len(sequences)), key=lambda s: len(sequences[s]))
    aux, final = [None] * len(sequences), [None] * len(sequences)
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and (j - i + 1) * len(sequences[order[j]]) <= tokens_per_batch:
            j += 1
        batch = [sequences[s] for s in order[i:j]]
        # lengths rounded up to 64: few distinct shapes, so oneDNN's and the allocator's caches stay small
        longest = -(-max(len(x) for x in batch) // 64) * 64
        ids = torch.tensor([x + [0] * (longest - len(x)) for x in batch], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x in batch], device=device)
        out = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        # hidden_states[i] is the residual stream entering layer i: vLLM's auxiliary hidden state for layer i
        layers = torch.stack([out.hidden_states[a] for a in aux_layers], dim=2)
        for b, s in enumerate(order[i:j]):
            n = len(sequences[s])
            aux[s] = layers[b, :n].to(torch.bfloat16).cpu()
            final[s] = out.last_hidden_state[b, :n].to(torch.bfloat16).cpu()
        i = j
    tokens = [t for x in sequences for t in x]
    starts = torch.tensor([0] + [len(x) for x in sequences]).cumsum(0)
    return {"tokens": torch.tensor(tokens, dtype=torch.int32), "starts": starts,
            "prompt_lens": torch.tensor([len(p) for p in record["prompts"]], dtype=torch.int32),
            "temperatures": torch.tensor(record["temperatures"], dtype=torch.float32),
            "aux": torch.cat(aux), "final": torch.cat(final)}


def generate_ptp_teacher_data(settings: TeacherSettings, conversations: list[list[dict]], out_dir: str | Path,
                              device: str = "cpu", max_hours: float | None = None) -> Path:
    """Both steps, one after the other (the teacher engine is freed before the state pass takes the device)."""
    settings.check()
    out_dir = Path(out_dir)
    check_meta(out_dir, settings)
    written = generate_sequences(settings, conversations, out_dir, max_hours)
    _free_engines()
    record_states(settings, out_dir, device)
    (out_dir / "meta.json").write_text(json.dumps({**json.loads((out_dir / "meta.json").read_text()),
                                                   "sequence_shards": written}, indent=2))
    return out_dir


def _free_engines() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TeacherStates:
    """The target's states of every sequence, memory-mapped from the shards: `sequence(s)` reads one sequence's
    aux [L, n_aux, H] and final [L, H] (bf16)."""

    def __init__(self, files: list[Path], shard_of: torch.Tensor, local_start: torch.Tensor, lengths: torch.Tensor):
        self.files, self.shard_of, self.local_start, self.lengths = files, shard_of, local_start, lengths
        self._open: dict[int, object] = {}

    def _shard(self, i: int):
        if i not in self._open:
            self._open[i] = safe_open(str(self.files[i]), framework="pt")
        return self._open[i]

    def sequence(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        f = self._shard(int(self.shard_of[s]))
        a, b = int(self.local_start[s]), int(self.local_start[s] + self.lengths[s])
        return f.get_slice("aux")[a:b], f.get_slice("final")[a:b]

    def __getstate__(self):  # safe_open handles do not pickle (DataLoader workers, DDP spawn): reopen there
        return {**self.__dict__, "_open": {}}


@dataclass
class PTPTeacherData:
    """Sequence s is tokens[starts[s]:starts[s+1]], its first prompt_lens[s] tokens the prompt, sampled at
    temperatures[s]; states.sequence(s) gives the target's states at each of its tokens."""
    tokens: torch.Tensor
    starts: torch.Tensor
    prompt_lens: torch.Tensor
    temperatures: torch.Tensor
    states: TeacherStates
    aux_layers: list[int]

    @property
    def num_sequences(self) -> int:
        return len(self.prompt_lens)

    @property
    def completion_tokens(self) -> int:
        return int((self.starts[1:] - self.starts[:-1] - self.prompt_lens).sum())

    def completions(self) -> torch.Tensor:
        """Every completion token, concatenated (for the draft vocabulary)."""
        return torch.cat([self.tokens[int(self.starts[s]) + int(self.prompt_lens[s]):int(self.starts[s + 1])]
                          for s in range(self.num_sequences)])

    def final_rows(self, positions: torch.Tensor) -> torch.Tensor:
        """The target's final states at positions [N] of the token stream -> [N, H] bf16, read row by row from the
        memory-mapped shards (heads on the final state: Medusa, CP)."""
        sequence = torch.searchsorted(self.starts, positions, right=True) - 1
        rows = []
        for p, s in zip(positions.tolist(), sequence.tolist()):
            local = int(self.states.local_start[s]) + p - int(self.starts[s])
            rows.append(self.states._shard(int(self.states.shard_of[s])).get_slice("final")[local:local + 1])
        return torch.cat(rows) if rows else torch.zeros(0)

    def draft_vocabulary(self, vocab_size: int, size: int) -> tuple[torch.Tensor, float]:
        """The `size` most frequent completion tokens (sorted target ids) and the share of completion tokens they
        cover: the vocabulary every draft trained on these data scores."""
        counts = torch.bincount(self.completions(), minlength=vocab_size)
        vocab = counts.topk(min(size, vocab_size)).indices.sort().values
        return vocab, float(counts[vocab].sum() / counts.sum())

    def split(self, eval_fraction: float, seed: int, max_eval: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, held-out) sequence indices: whole sequences are held out (the positions of one sequence are not
        independent), the same ones for every draft trained with the same seed and fraction."""
        order = torch.randperm(self.num_sequences, generator=torch.Generator().manual_seed(seed))
        n_eval = max(1, int(self.num_sequences * eval_fraction))
        n_eval = n_eval if max_eval is None else min(n_eval, max_eval)
        return order[:-n_eval], order[-n_eval:]


def load_ptp_teacher_data(data_dir: str | Path, max_shards: int | None = None) -> PTPTeacherData:
    """The shards with states (the first `max_shards` of them if given: a data-scaling point)."""
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("states_*.safetensors"))[:max_shards]
    if not files:
        raise FileNotFoundError(f"{data_dir}: no PTP teacher states (states_*.safetensors)")
    tokens, starts, prompt_lens, temperatures, shard_of, local_start, offset = [], [torch.zeros(1, dtype=torch.long)], \
        [], [], [], [], 0
    for i, path in enumerate(files):
        with safe_open(str(path), framework="pt") as f:
            t, s = f.get_tensor("tokens"), f.get_tensor("starts").long()
            tokens.append(t)
            starts.append(s[1:] + offset)
            prompt_lens.append(f.get_tensor("prompt_lens"))
            temperatures.append(f.get_tensor("temperatures"))
            shard_of.append(torch.full((len(s) - 1,), i))
            local_start.append(s[:-1])
            offset += len(t)
    meta = json.loads((data_dir / "meta.json").read_text())
    starts = torch.cat(starts)
    return PTPTeacherData(tokens=torch.cat(tokens).long(), starts=starts, prompt_lens=torch.cat(prompt_lens).long(),
                          temperatures=torch.cat(temperatures),
                          states=TeacherStates(files, torch.cat(shard_of), torch.cat(local_start),
                                               starts[1:] - starts[:-1]),
                          aux_layers=meta["aux_layers"])


def disk_bytes_per_token(hidden_size: int, n_aux: int) -> int:
    """States stored per token of prompt + continuation (aux layers + final, bf16)."""
    return (n_aux + 1) * hidden_size * BYTES_PER_STATE_VALUE
