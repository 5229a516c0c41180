"""`vllm-ptp` command: train drafts, serve, run the offline demo, benchmark, load-test the server."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys


def _target(path: str | None) -> str:
    if path:
        return path
    from vllm_ptp.embedded import default_target_dir
    return str(default_target_dir())


def _training_inputs(a: argparse.Namespace):
    """(target folder, teacher cache folder, training conversations) from the shared train options."""
    from pathlib import Path

    from vllm_ptp.data import load_conversations
    conversations = []
    for source in a.data.split(","):
        conversations += load_conversations(source, "train", a.prompts, seed=a.seed)
    return _target(a.target), Path(a.teacher_dir or Path(a.out) / "teacher"), conversations


def cmd_train_cp(a: argparse.Namespace) -> None:
    from vllm_ptp.training.train_cp import CPTrainArgs, train_cp
    target, teacher_dir = _teacher_data(a)
    train_cp(CPTrainArgs(target=target, data_dir=str(teacher_dir), out=a.out, rank=a.rank, heads=a.heads,
                         steps=a.steps, batch_size=a.batch_size, lr=a.lr, balance_weight=a.balance_weight,
                         draft_vocab_size=a.draft_vocab, seed=a.seed, device=a.device, max_hours=a.max_hours,
                         save_every=a.save_every, command=a.command_line))
    print(f"checkpoint written to {a.out}")


def cmd_train_ptp(a: argparse.Namespace) -> None:
    from vllm_ptp.training.train_ptp import PTPTrainArgs, train_ptp
    target, teacher_dir = _teacher_data(a)
    if a.teacher_only:
        return
    train_ptp(PTPTrainArgs(u_embedding="none" if a.independent else a.u_embedding,
                           u_source="self" if a.inverse_ar else "teacher", **_slot_train_args(a, target, teacher_dir)))
    print(f"checkpoint written to {a.out}")


def _teacher_settings(a: argparse.Namespace, target: str, aux_layers: list[int]):
    from vllm_ptp.training.ptp_data import TeacherSettings
    return TeacherSettings(target=target, aux_layers=aux_layers, samples_per_prompt=a.samples_per_prompt,
                           temperatures=tuple(a.temperatures),
                           max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens, seed=a.seed,
                           state_dtype=a.state_dtype)


def cmd_teacher(a: argparse.Namespace) -> None:
    """Teacher data only: step 1 (continuations), step 2 (states) or both; resumable, seeded."""
    import random
    from pathlib import Path

    from vllm_ptp.data import load_conversations
    from vllm_ptp.training.ptp_data import check_meta, generate_sequences, record_states
    target = _target(a.target)
    settings = _teacher_settings(a, target, _aux_layers(target, a.aux_layers))
    settings.check()
    out = Path(a.out)
    check_meta(out, settings)
    if a.step in ("sequences", "all"):
        conversations = []
        for source in a.data.split(","):
            conversations += load_conversations(source, a.split, a.prompts, seed=a.seed)
        # the sources interleaved, so that a run stopped early (--max-hours) has seen each in proportion
        random.Random(a.seed).shuffle(conversations)
        written = generate_sequences(settings, conversations, out, a.max_hours)
        print(f"{written} shards of continuations in {out}")
    if a.step in ("states", "all"):
        record_states(settings, out, a.device, follow=a.follow)
        print(f"states recorded in {out}")


def cmd_train_medusa(a: argparse.Namespace) -> None:
    from vllm_ptp.training.train_medusa import MedusaTrainArgs, train_medusa
    target, teacher_dir = _teacher_data(a)
    train_medusa(MedusaTrainArgs(
        target=target, data_dir=str(teacher_dir), out=a.out, heads=a.heads, blocks=a.blocks, loss=a.loss,
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, draft_vocab_size=a.draft_vocab, seed=a.seed,
        device=a.device, max_hours=a.max_hours, save_every=a.save_every, command=a.command_line))
    print(f"checkpoint written to {a.out}")


def _aux_layers(target: str, given: str | None) -> list[int]:
    """EAGLE-3's default target layers (2, L/2, L-3), or the comma-separated list given."""
    if given:
        return [int(x) for x in given.split(",")]
    from transformers import AutoConfig
    n = AutoConfig.from_pretrained(target).num_hidden_layers
    return sorted({min(2, n - 1), n // 2, max(n - 3, 0)})


def cmd_train_peagle(a: argparse.Namespace) -> None:
    from vllm_ptp.training.train_ptp import PTPTrainArgs, train_ptp
    target, teacher_dir = _teacher_data(a)
    if not a.teacher_only:
        train_ptp(PTPTrainArgs(u_embedding="none", conditioning=False, **_slot_train_args(a, target, teacher_dir)))
        print(f"checkpoint written to {a.out}")


def cmd_train_eagle3(a: argparse.Namespace) -> None:
    from vllm_ptp.training.train_eagle3 import Eagle3TrainArgs, train_eagle3
    target, teacher_dir = _teacher_data(a)
    if not a.teacher_only:
        train_eagle3(Eagle3TrainArgs(**_slot_train_args(a, target, teacher_dir)))
        print(f"checkpoint written to {a.out}")


def _teacher_data(a: argparse.Namespace):
    """The PTP teacher data, shared by every kind of draft (heads on the final state read only its final states):
    an existing --teacher-dir is used as it is; otherwise made or completed in the teacher folder."""
    import json

    from vllm_ptp.training.ptp_data import generate_ptp_teacher_data
    target, teacher_dir, conversations = _training_inputs(a)
    if a.teacher_dir and (teacher_dir / "meta.json").exists():
        # an existing folder (e.g. from `vllm-ptp teacher`, maybe still growing) is used as it is
        print(f"training on the teacher data already in {teacher_dir}")
    else:
        meta = teacher_dir / "meta.json"
        given = getattr(a, "aux_layers", None)
        # completing a folder keeps its layers unless others are asked for (then check_meta refuses the mix)
        aux_layers = json.loads(meta.read_text())["aux_layers"] if meta.exists() and not given else \
            _aux_layers(target, given)
        generate_ptp_teacher_data(_teacher_settings(a, target, aux_layers), conversations, teacher_dir, a.device)
    if getattr(a, "teacher_only", False):
        print(f"teacher data in {teacher_dir}")
    return target, teacher_dir


def _slot_train_args(a: argparse.Namespace, target: str, teacher_dir) -> dict:
    return dict(target=target, data_dir=str(teacher_dir), out=a.out, slots=a.slots, loss=a.loss, gamma=a.gamma,
                layers=a.layers, steps=a.steps, batch_size=a.batch_size, window=a.window, anchors=a.anchors, lr=a.lr,
                draft_vocab_size=a.draft_vocab, seed=a.seed, device=a.device, eval_dir=a.eval_dir,
                max_hours=a.max_hours, save_every=a.save_every, init_from=a.init_from,
                command=a.command_line)


def cmd_eval_draft(a: argparse.Namespace) -> None:
    """Offline acceptance per position of a parallel draft on held-out teacher data (no vLLM engine)."""
    import json

    import torch

    from vllm_ptp.models.ptp_draft import load_ptp_draft
    from vllm_ptp.training.acceptance import draft_acceptance, teacher_sequences
    from vllm_ptp.training.common import load_target_head
    from vllm_ptp.training.ptp_data import load_ptp_teacher_data
    torch.set_num_threads(a.threads) if a.threads else None
    embed, lm_head, _ = load_target_head(_target(a.target))
    draft = load_ptp_draft(a.draft)
    if not draft.config.parallel:
        raise SystemExit(f"{a.draft}: eval-draft measures parallel drafts (PTP, P-EAGLE); this one drafts "
                         f"sequentially")
    draft.embed = embed
    data = load_ptp_teacher_data(a.data)
    if list(data.aux_layers) != list(draft.config.aux_layer_ids):
        raise SystemExit(f"{a.data}/meta.json: states of layers {data.aux_layers}, the draft reads "
                         f"{draft.config.aux_layer_ids}")
    k = a.k or draft.config.num_slots
    from vllm_ptp.proposers.draft_confidence import check_threshold
    try:
        thresholds = tuple(check_threshold(c) for c in a.min_draft_confidence)
    except ValueError as e:
        raise SystemExit(f"--min-draft-confidence: {e}") from None
    results = {name: r.summary() for name, r in
               draft_acceptance(draft, teacher_sequences(data, max_tokens=a.max_tokens), lm_head, k,
                                thresholds).items()}
    print(json.dumps({"draft": a.draft, "data": a.data, "k": k, "acceptance": results}, indent=2))


def cmd_compat_probe(a: argparse.Namespace) -> None:
    from vllm_ptp.compat_probe import main as probe
    sys.exit(probe(a.probe_args))


def cmd_demo(a: argparse.Namespace) -> None:
    from vllm_ptp.bench.demo import run_demo
    run_demo(target=_target(a.target), drafts=a.draft, prompts=a.prompts, max_tokens=a.max_tokens)


def cmd_bench(a: argparse.Namespace) -> None:
    from vllm_ptp.bench.compare import BenchConfig, run_bench
    given = {"methods": a.methods, "target": a.target, "datasets": a.datasets, "temperatures": a.temperatures,
             "batch_sizes": a.batch_sizes, "prompts": a.prompts, "max_tokens": a.max_tokens, "repeats": a.repeats,
             "identity_tokens": a.identity_tokens, "dtype": a.dtype, "seed": a.seed}
    if a.config:
        config = BenchConfig.from_file(a.config, **given)
    else:
        config = BenchConfig(**{k: v for k, v in given.items() if v is not None})
        config.check("command line")
    run_bench(_target(config.target), config, out=a.out)


def cmd_serve(a: argparse.Namespace) -> None:
    from vllm_ptp.bench.server import api_server_command
    command = api_server_command(a.model, *a.vllm_args)
    os.execv(command[0], command)


def cmd_load(a: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from vllm_ptp.bench.load import LoadSettings, run_load
    from vllm_ptp.bench.demo import shipped
    draft = a.draft or str(shipped("ptp_smollm2"))
    speculative_config = {"model": draft, **json.loads(a.speculative_config or "{}")}
    settings = LoadSettings(requests=a.requests, concurrency=a.concurrency, max_tokens=a.max_tokens, warmup=a.warmup,
                            rss_growth_mb=a.rss_growth_mb, prompt_sources=a.prompt_sources, prompts=a.prompts,
                            startup_timeout=a.startup_timeout)
    report = run_load(_target(a.target), speculative_config, settings, Path(a.out), a.vllm_args)
    print((Path(a.out) / "load.md").read_text())
    if report["problems"]:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vllm-ptp", description=__doc__)
    from vllm_ptp.training.train_cp import CPTrainArgs
    from vllm_ptp.training.train_medusa import MedusaTrainArgs
    from vllm_ptp.training.train_ptp import PTPTrainArgs
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a draft for a target")
    kinds = train.add_subparsers(dest="kind", required=True)
    cp = kinds.add_parser("cp", help="CP-decomposition heads")
    _add_data_options(cp)
    d = _defaults(CPTrainArgs)
    cp.add_argument("--rank", type=int, default=d["rank"])
    cp.add_argument("--heads", type=int, default=d["heads"])
    cp.add_argument("--steps", type=int, default=d["steps"])
    cp.add_argument("--batch-size", type=int, default=d["batch_size"])
    cp.add_argument("--lr", type=float, default=d["lr"])
    cp.add_argument("--balance-weight", type=float, default=d["balance_weight"])
    cp.add_argument("--draft-vocab", type=int, default=d["draft_vocab_size"])
    cp.add_argument("--max-hours", type=float, help="stop after this long; the same command resumes")
    cp.add_argument("--save-every", type=int, default=d["save_every"],
                    help="steps between held-out evaluations and saved training states")
    cp.set_defaults(func=cmd_train_cp)

    medusa = kinds.add_parser("medusa", help="Medusa heads, served by vLLM's own `method: medusa` (baseline)")
    _add_data_options(medusa)
    d = _defaults(MedusaTrainArgs)
    medusa.add_argument("--heads", type=int, default=d["heads"], help="draft tokens per step (k max)")
    medusa.add_argument("--blocks", type=int, default=d["blocks"], help="residual blocks per head")
    medusa.add_argument("--loss", default=d["loss"], choices=["ce", "soft"],
                        help="ce: teacher's sampled tokens; soft: the target's distribution at each position")
    medusa.add_argument("--steps", type=int, default=d["steps"])
    medusa.add_argument("--batch-size", type=int, default=d["batch_size"], help="positions per step")
    medusa.add_argument("--lr", type=float, default=d["lr"])
    medusa.add_argument("--draft-vocab", type=int, default=d["draft_vocab_size"],
                        help="tokens the training softmax runs over (the heads always score the full vocabulary)")
    medusa.add_argument("--max-hours", type=float, help="stop after this long; the same command resumes")
    medusa.add_argument("--save-every", type=int, default=d["save_every"],
                        help="steps between held-out evaluations and saved training states")
    medusa.set_defaults(func=cmd_train_medusa)

    ptp = kinds.add_parser("ptp", help="Parallel Token Prediction draft (EAGLE-3 layout + auxiliary variables)")
    _add_slot_draft_options(ptp, "draft tokens per step the draft is trained for (k max)")
    ptp.add_argument("--u-embedding", default=_defaults(PTPTrainArgs)["u_embedding"], choices=["binary", "quarter_cos", "linear_interpolation"])
    ptp.add_argument("--independent", action="store_true", help="the ablation: same slots, no auxiliary variables")
    ptp.add_argument("--inverse-ar", action="store_true",
                     help="teacher-free: u from the draft's own CDF interval of the data token")
    ptp.set_defaults(func=cmd_train_ptp)

    peagle = kinds.add_parser("peagle", help="P-EAGLE draft (EAGLE-3 + parallel drafting, no u): vLLM's own format "
                                             "(baseline, the PTP draft without its conditioning)")
    _add_slot_draft_options(peagle, "draft tokens per step the draft is trained for (k max)")
    peagle.set_defaults(func=cmd_train_peagle)

    eagle3 = kinds.add_parser("eagle3", help="EAGLE-3 draft (sequential drafting, training-time test): vLLM's own "
                                             "format (baseline)")
    _add_slot_draft_options(eagle3, "drafting steps unrolled in training (training-time test), the k trained for")
    eagle3.set_defaults(func=cmd_train_eagle3)

    teacher = sub.add_parser("teacher", help="teacher data for the EAGLE-3-layout drafts and Medusa: the target's "
                                             "continuations (vLLM) and its states along them (resumable)")
    teacher.add_argument("--out", required=True, help="teacher folder (pass it to `train ... --teacher-dir`)")
    teacher.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    teacher.add_argument("--data", default="sharegpt_turns,stdlib",
                         help="comma-separated prompt sources: sharegpt | sharegpt_turns | humaneval | stdlib | "
                              "FILE.jsonl")
    teacher.add_argument("--split", default="train", choices=["train", "heldout"])
    teacher.add_argument("--prompts", type=int, help="prompts per source (default: all)")
    teacher.add_argument("--step", default="all", choices=["sequences", "states", "all"],
                         help="continuations (vLLM), states (transformers) or both")
    teacher.add_argument("--follow", action="store_true",
                         help="with --step states: keep recording shards as a running `--step sequences` writes them")
    teacher.add_argument("--max-hours", type=float, help="stop generating after this long (at a shard boundary)")
    teacher.add_argument("--aux-layers", help="target layers the draft reads, e.g. 2,15,27 (default: EAGLE-3's)")
    _add_teacher_options(teacher)
    teacher.set_defaults(func=cmd_teacher)

    evaluate = sub.add_parser("eval-draft", help="offline acceptance per position of a PTP / P-EAGLE draft on "
                                                 "held-out teacher data, as vLLM's verification would accept it")
    evaluate.add_argument("draft", help="draft folder")
    evaluate.add_argument("--data", required=True, help="teacher folder (`vllm-ptp teacher --split heldout ...`)")
    evaluate.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    evaluate.add_argument("--k", type=int, help="draft positions (default: the draft's slots)")
    evaluate.add_argument("--max-tokens", type=int, help="evaluate only the first tokens of each continuation")
    evaluate.add_argument("--threads", type=int, help="torch threads")
    evaluate.add_argument("--min-draft-confidence", type=float, nargs="*", default=[], metavar="C",
                          help="also score these values of speculative_config.min_draft_confidence: drafts verified "
                               "and accepted per step when each row stops where the draft is less sure than C (at "
                               "T > 0 an estimate: the later slots read u's of the teacher's tokens, not the "
                               "draft's own picks)")
    evaluate.set_defaults(func=cmd_eval_draft)

    compat = sub.add_parser("compat-probe", help="look up every vLLM internal vllm-ptp touches in another vLLM's "
                                                 "source (a version pip downloads, or a wheel): what would break")
    compat.add_argument("probe_args", nargs=argparse.REMAINDER, help="VERSION | WHEEL [--wheels DIR]")
    compat.set_defaults(func=cmd_compat_probe)

    demo = sub.add_parser("demo", help="offline demo: acceptance and tokens/s with and without the draft")
    demo.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    demo.add_argument("--draft", nargs="+", help="draft checkpoint folders (default: the shipped PTP draft and CP "
                                                 "rank-8 heads)")
    demo.add_argument("--prompts", type=int, default=8)
    demo.add_argument("--max-tokens", type=int, default=128)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="methods side by side on held-out prompts: JSON, Markdown table, PNG plot")
    bench.add_argument("--config", help="JSON file with any of the options below (e.g. examples/bench_smollm2.json); "
                                        "options given here override it")
    bench.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    bench.add_argument("--methods", nargs="+",
                       help="none | ngram[:k] | NAME=DRAFT_DIR[:k][+ngram][@C] (default: none ngram:3); a --config "
                            "file may also give {\"name\": NAME, \"speculative_config\": {...}}")
    bench.add_argument("--datasets", nargs="+", help="sharegpt | humaneval | FILE.jsonl (default: sharegpt humaneval)")
    bench.add_argument("--temperatures", nargs="+", type=float, help="default: 0 1")
    bench.add_argument("--batch-sizes", nargs="+", type=int, help="requests in flight together (default: 1 8)")
    bench.add_argument("--prompts", type=int, help="prompts per set (default 8)")
    bench.add_argument("--max-tokens", type=int, help="new tokens per prompt (default 128)")
    bench.add_argument("--repeats", type=int, help="engines per method, order rotated between repeats (default 1)")
    bench.add_argument("--identity-tokens", type=int,
                       help="new tokens per prompt for the float32 greedy-identity check, 0 = skip (default 64)")
    bench.add_argument("--dtype", help="auto (default: bf16 where the machine multiplies it natively, else float32), "
                                       "bfloat16, float32 or float16")
    bench.add_argument("--seed", type=int, help="prompt shuffle and engine seed (default 0)")
    bench.add_argument("--out", default="bench_results", help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve", help="vLLM's OpenAI-compatible server: every argument after MODEL goes to "
                                         "`python -m vllm.entrypoints.openai.api_server --model MODEL` unchanged")
    serve.add_argument("model", help="target model folder or name")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER,
                       help="vLLM api_server options, e.g. --port 8000 --speculative-config '{\"model\": DRAFT}'")
    serve.set_defaults(func=cmd_serve)

    load = sub.add_parser("load", help="load-test the OpenAI server without and with a draft: failures, latency, "
                                       "throughput, resident memory (JSON + Markdown)")
    load.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    load.add_argument("--draft", help="draft folder (default: examples/drafts/ptp_smollm2)")
    load.add_argument("--speculative-config", help="JSON merged into {\"model\": DRAFT}, e.g. "
                                                   "'{\"num_speculative_tokens\": 3}'")
    load.add_argument("--requests", type=int, default=1000, help="measured requests per configuration")
    load.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    load.add_argument("--max-tokens", type=int, default=32)
    load.add_argument("--warmup", type=int, default=32, help="requests sent before memory is measured")
    load.add_argument("--rss-growth-mb", type=float, default=300,
                      help="fail if the server's resident memory grows more than this after warm-up")
    load.add_argument("--prompt-sources", default="sharegpt,humaneval",
                      help="held-out prompts of these sources (built-in prompts if none is installed)")
    load.add_argument("--prompts", type=int, default=64, help="prompts per source")
    load.add_argument("--startup-timeout", type=float, default=600, help="seconds a server may take to start")
    load.add_argument("--out", default="load_results", help="folder for load.json, load.md and the server logs")
    load.add_argument("vllm_args", nargs="*", help="after --: more api_server options for both servers, e.g. "
                                                   "-- --dtype float32 --max-model-len 2048")
    load.set_defaults(func=cmd_load)

    argv = sys.argv[1:] if argv is None else argv
    a = parser.parse_args(argv)
    a.command_line = "vllm-ptp " + shlex.join(argv)
    if a.command == "train":
        # under torchrun: one process per device, DistributedDataParallel (vllm_ptp.training.distributed)
        from vllm_ptp.training.distributed import start_from_environment
        start_from_environment(a.device)
    a.func(a)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="target model folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data", default="sharegpt", help="sharegpt | humaneval | FILE.jsonl (comma-separated mix)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--teacher-dir", help="where the teacher data are cached (default OUT/teacher)")
    parser.add_argument("--prompts", type=int, default=512, help="prompts per data source")
    _add_teacher_options(parser)


def _add_teacher_options(parser: argparse.ArgumentParser) -> None:
    from vllm_ptp.training.ptp_data import TeacherSettings
    defaults = TeacherSettings(target="", aux_layers=[])
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--max-prompt-tokens", type=int, default=defaults.max_prompt_tokens,
                        help="longer prompts are left out")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(defaults.temperatures),
                        help="the cycle of sampling temperatures over the prompts")
    parser.add_argument("--samples-per-prompt", type=int, default=defaults.samples_per_prompt,
                        help="continuations per prompt at T > 0")
    parser.add_argument("--state-dtype", default=defaults.state_dtype, choices=["bfloat16", "float32"],
                        help="the target's dtype in the teacher-forced state pass")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")


def _add_slot_draft_options(parser: argparse.ArgumentParser, slots_help: str) -> None:
    """The options `train ptp` has that apply to every EAGLE-3-layout draft (same defaults)."""
    from vllm_ptp.training.train_ptp import SlotTrainArgs
    _add_data_options(parser)
    d = _defaults(SlotTrainArgs)
    parser.add_argument("--aux-layers", help="target layers the draft reads, e.g. 2,15,27 (default: EAGLE-3's)")
    parser.add_argument("--slots", type=int, default=d["slots"], help=slots_help)
    parser.add_argument("--loss", default=d["loss"], choices=["ce", "kl"])
    parser.add_argument("--gamma", type=float, default=d["gamma"], help="weight gamma^k of slot k")
    parser.add_argument("--layers", type=int, default=d["layers"], help="decoder layers of the draft")
    parser.add_argument("--teacher-only", action="store_true", help="make the teacher data, do not train")
    parser.add_argument("--eval-dir", help="held-out teacher folder (`vllm-ptp teacher --split heldout`): the offline "
                                           "acceptance logged as training goes, and the best checkpoint is the one "
                                           "exported")
    parser.add_argument("--max-hours", type=float, help="stop after this long; the same command resumes")
    parser.add_argument("--init-from", help="draft folder (same layout and teacher data) whose weights a new run starts "
                                            "from; ignored when the run resumes")
    parser.add_argument("--save-every", type=int, default=d["save_every"],
                        help="steps between evaluations and saved state")
    parser.add_argument("--steps", type=int, default=d["steps"])
    parser.add_argument("--batch-size", type=int, default=d["batch_size"], help="sequences per step")
    parser.add_argument("--window", type=int, default=d["window"], help="context slots per sequence")
    parser.add_argument("--anchors", type=int, default=d["anchors"], help="draft steps (anchors) per sequence")
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--draft-vocab", type=int, default=d["draft_vocab_size"])


def _defaults(args_class) -> dict:
    """The training dataclass's defaults: the one place they live (the CLI and the Python API cannot drift)."""
    return {f.name: f.default for f in dataclasses.fields(args_class) if f.default is not dataclasses.MISSING}


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1:])
