"""`vllm-ptp` command: train drafts, run the offline demo, benchmark."""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def _target(path: str | None) -> str:
    if path:
        return path
    from vllm_ptp.embedded import default_target_dir
    return str(default_target_dir())


def cmd_train_cp(a: argparse.Namespace) -> None:
    from pathlib import Path

    from vllm_ptp.training.data import load_conversations
    from vllm_ptp.training.teacher import generate_teacher_data
    from vllm_ptp.training.train_cp import CPTrainArgs, train_cp

    target = _target(a.target)
    teacher_dir = Path(a.teacher_dir or Path(a.out) / "teacher")
    conversations = []
    for source in a.data.split(","):
        conversations += load_conversations(source, "train", a.prompts, seed=a.seed)
    generate_teacher_data(target, conversations, teacher_dir, max_new_tokens=a.max_new_tokens, seed=a.seed,
                          device=a.device)
    train_cp(CPTrainArgs(target=target, data_dir=str(teacher_dir), out=a.out, rank=a.rank, heads=a.heads,
                         steps=a.steps, batch_size=a.batch_size, lr=a.lr, balance_weight=a.balance_weight,
                         draft_vocab_size=a.draft_vocab, seed=a.seed, device=a.device, command=a.command_line))
    print(f"checkpoint written to {a.out}")


def cmd_demo(a: argparse.Namespace) -> None:
    from vllm_ptp.bench.demo import run_demo
    run_demo(target=_target(a.target), draft=a.draft, prompts=a.prompts, max_tokens=a.max_tokens)


def cmd_bench(a: argparse.Namespace) -> None:
    from vllm_ptp.bench.compare import parse_methods, run_bench
    run_bench(_target(a.target), parse_methods(a.methods), a.datasets, a.temperatures, a.prompts, a.max_tokens,
              a.out, dtype=a.dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vllm-ptp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a draft for a target")
    kinds = train.add_subparsers(dest="kind", required=True)
    cp = kinds.add_parser("cp", help="CP-decomposition heads")
    cp.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    cp.add_argument("--data", default="sharegpt", help="sharegpt | humaneval | FILE.jsonl (comma-separated mix)")
    cp.add_argument("--out", required=True)
    cp.add_argument("--teacher-dir", help="where teacher continuations are cached (default OUT/teacher)")
    cp.add_argument("--prompts", type=int, default=512, help="prompts per data source")
    cp.add_argument("--max-new-tokens", type=int, default=192)
    cp.add_argument("--rank", type=int, default=8)
    cp.add_argument("--heads", type=int, default=3)
    cp.add_argument("--steps", type=int, default=1500)
    cp.add_argument("--batch-size", type=int, default=64)
    cp.add_argument("--lr", type=float, default=2e-3)
    cp.add_argument("--balance-weight", type=float, default=0.01)
    cp.add_argument("--draft-vocab", type=int, default=8192)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--device", default="cuda" if _cuda() else "cpu")
    cp.set_defaults(func=cmd_train_cp)

    demo = sub.add_parser("demo", help="offline demo: acceptance and tokens/s with and without the draft")
    demo.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    demo.add_argument("--draft", help="draft checkpoint folder (default: the shipped CP rank-8 heads)")
    demo.add_argument("--prompts", type=int, default=8)
    demo.add_argument("--max-tokens", type=int, default=128)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="methods side by side on held-out prompts (batch 1)")
    bench.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    bench.add_argument("--methods", nargs="+", default=["none", "ngram:3"],
                       help="none | ngram[:k] | NAME=DRAFT_DIR[:k]; put 'none' first for speed-ups")
    bench.add_argument("--datasets", nargs="+", default=["sharegpt", "humaneval"])
    bench.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 1.0])
    bench.add_argument("--prompts", type=int, default=8)
    bench.add_argument("--max-tokens", type=int, default=128)
    bench.add_argument("--dtype", default="bfloat16")
    bench.add_argument("--out", help="write the rows as JSON here")
    bench.set_defaults(func=cmd_bench)

    argv = sys.argv[1:] if argv is None else argv
    a = parser.parse_args(argv)
    a.command_line = "vllm-ptp " + shlex.join(argv)
    a.func(a)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1:])
