"""What training every draft shares: the arguments, the frozen target head, resumable training state, the loop."""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vllm_ptp.models.checkpoint import embedding_fingerprint
from vllm_ptp.training import distributed


@dataclass
class TrainArgs:
    target: str
    data_dir: str
    out: str
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    draft_vocab_size: int = 8192
    seed: int = 0
    eval_fraction: float = 0.02
    save_every: int = 200
    device: str = "cpu"
    max_hours: float | None = None  # stop (resumable: the same command goes on) after this long
    command: str = "(python API)"  # recorded in the model card


def load_target_head(target: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(embedding [V, H], LM head [V, H], verifier info) of a transformers causal LM folder, frozen."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    embed = model.get_input_embeddings().weight.detach().clone()
    lm_head = model.get_output_embeddings().weight.detach().clone()
    verifier = {"name_or_path": Path(target).name, "architectures": model.config.architectures,
                "embedding_fingerprint": embedding_fingerprint(embed)}
    return embed, lm_head, verifier


STATE_DIR = "training_state"  # not beside model.safetensors: vLLM's loader reads every *.safetensors of a draft folder


def save_state(out: Path, heads: torch.nn.Module, optimizer, schedule, step: int, best: float | None = None) -> None:
    out = out / STATE_DIR
    out.mkdir(exist_ok=True)
    tensors = {f"model.{k}": v for k, v in heads.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optim.{i}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tmp = out / "train_state.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(out / "train_state.safetensors")
    (out / "train_state.json").write_text(json.dumps({"step": step, "schedule": schedule.state_dict()["last_epoch"],
                                                      "best": best}))


def resume(out: Path, heads: torch.nn.Module, optimizer, schedule) -> int:
    out = out / STATE_DIR
    if not (out / "train_state.json").exists():
        return 0
    meta = json.loads((out / "train_state.json").read_text())
    tensors = load_file(str(out / "train_state.safetensors"))
    heads.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state["state"].setdefault(int(i), {})[name] = value
    optimizer.load_state_dict(state)
    with warnings.catch_warnings():  # replaying the schedule without optimizer steps is intended here
        warnings.simplefilter("ignore")
        for _ in range(meta["schedule"]):
            schedule.step()
    return meta["step"]




def make_optimizer(params: list[torch.nn.Parameter], lr: float, steps: int, warmup: int):
    """AdamW with linear warm-up then cosine decay to zero at `steps`."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)  # EAGLE's / speculators' betas
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    return optimizer, schedule


def optimizer_step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer, schedule) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.5)
    optimizer.step()
    schedule.step()


def run_steps(out: Path, model: torch.nn.Module, trainable: list[torch.nn.Parameter], optimizer, schedule,
              args: TrainArgs, step: int, desc: str, train_step: Callable[[int, torch.Generator], tuple[torch.Tensor, dict]],
              evaluate: Callable[[], dict], at_save: Callable[[int, dict], float | None] | None = None,
              best: float | None = None) -> int:
    """The training loop of every draft. From `step` to args.steps: a generator seeded by the step (so a resumed run
    draws what the straight run drew), `train_step(steps done after it, g)` -> (loss, fields for the log), one
    clipped AdamW step. Every args.save_every steps and at the end, a log record {step, those fields, evaluate(),
    seconds} (`at_save(step, record)` may add to it and returns the best score so far, kept in the state from `best`
    on) and the training state. Stops early, with its state saved, after args.max_hours. -> the step reached.

    Under torchrun (vllm_ptp.training.distributed) the step runs through DistributedDataParallel; rank 0 alone
    evaluates, logs and saves."""
    main = distributed.is_main()
    step_fn = train_step
    if distributed.rank_and_size()[1] > 1:
        step_fn = torch.nn.parallel.DistributedDataParallel(distributed.StepModule(model, train_step))
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(out / "train_log.jsonl", "a")) if main else None
        bar = stack.enter_context(tqdm(total=args.steps, initial=step, desc=desc, disable=not main))
        if step == 0 and main:
            log.write(json.dumps({"step": 0, **evaluate()}) + "\n")
        started = time.time()
        while step < args.steps:
            out_of_time = args.max_hours is not None and time.time() - started > args.max_hours * 3600
            if distributed.agree(out_of_time):
                if main:
                    save_state(out, model, optimizer, schedule, step, best)
                break
            model.train()
            loss, fields = step_fn(step + 1, torch.Generator().manual_seed(args.seed * 1_000_003 + step))
            optimizer_step(loss, trainable, optimizer, schedule)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step % args.save_every == 0 or step == args.steps) and main:
                model.eval()
                record = {"step": step, **fields, **evaluate(), "seconds": round(time.time() - started, 1)}
                if at_save is not None:
                    best = at_save(step, record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                save_state(out, model, optimizer, schedule, step, best)
    distributed.barrier()
    return step
