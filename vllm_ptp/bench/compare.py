"""`vllm-ptp bench`: speculative methods side by side on held-out prompts, every ratio from the same run.

Each method gets a fresh vLLM engine (vLLM's default multiprocess engine, eager mode, the same dtype, vLLM's own CPU
thread binding, NUMBA_NUM_THREADS=1) per repeat, and that engine runs every setting (prompt set x temperature x batch
size) in turn; the method order is rotated between repeats so no method always runs first or last. Reported per
method and setting: output tokens/s (mean over repeats), speed-up over no speculation in the same setting, mean
acceptance length (1 + accepted drafts per verifying step), tokens per step (output tokens per request-step, drafting
or not: vLLM's ngram verifies only where it matched, so its acceptance length alone flatters it), per-position
acceptance, the share of the run's wall time spent drafting (the runner's propose step, for every method), and whether
greedy outputs are identical to no speculation, checked in a separate float32 engine (bf16 verification flips
near-ties; background.md §3). vLLM 0.32's
CPU rejection sampler verifies sampled requests against uninitialised temperatures; vllm-ptp fixes that for its own
methods, and the bench turns the fix on for every method so that T > 0 compares like with like.
Methods are 'none', 'ngram[:k]', 'suffix[:k]' or 'NAME=DRAFT_DIR[:k][+ngram|+suffix][@C]': vLLM recognises the
draft's kind from its config (ours: PTP and CP; vLLM's own: Medusa, EAGLE-3, P-EAGLE); 'suffix' is vLLM's suffix
decoding; '+ngram' turns on the hybrid mode of ours (context matches ahead of the draft, with the ngram row's match
lengths), '+suffix' the same with vLLM's suffix decoding as the match; '@C' sets ours' min_draft_confidence to C
(each row's draft stops where the draft is less sure than C; '@auto': the cut measured while serving). A config file
may also give a method as {"name": NAME, "speculative_config": {...}}: vLLM's speculative config as it is, for
settings the short form lacks.
Writes OUT/bench.json, OUT/bench.md and OUT/bench.png.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from vllm_ptp.proposers.draft_confidence import AUTO


DTYPES = ("auto", "bfloat16", "float32", "float16")


@dataclass
class Method:
    name: str
    speculative_config: dict | None


@dataclass
class BenchConfig:
    methods: list[str | dict] = field(default_factory=lambda: ["none", "ngram:3"])
    target: str | None = None
    datasets: list[str] = field(default_factory=lambda: ["sharegpt", "humaneval"])
    temperatures: list[float] = field(default_factory=lambda: [0.0, 1.0])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    prompts: int = 8
    max_tokens: int = 128
    repeats: int = 1
    identity_tokens: int = 64  # new tokens per prompt in the float32 greedy-identity check (0: no check)
    dtype: str = "auto"  # vllm_ptp.machine.resolve_dtype: bf16 where the machine multiplies it natively, else float32
    seed: int = 0
    max_model_len: int | None = None  # None: the target's own

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "BenchConfig":
        """A JSON file with any of the fields (methods required); `overrides` that are not None win."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a JSON bench config ({e})") from e
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        if "methods" not in data and overrides.get("methods") is None:
            raise ValueError(f"{path}: field 'methods' is required (e.g. [\"none\", \"ptp=examples/drafts/ptp\"])")
        data["methods"] = [_relative_to(spec, path.parent) for spec in data.get("methods", [])]
        data.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**data)
        config.check(str(path))
        return config

    def check(self, where: str = "bench config") -> None:
        if not self.methods:
            raise ValueError(f"{where}: no methods")
        for name in ("prompts", "max_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if any(b < 1 for b in self.batch_sizes) or not self.batch_sizes:
            raise ValueError(f"{where}: batch_sizes must be integers >= 1, got {self.batch_sizes}")
        if any(t < 0 for t in self.temperatures) or not self.temperatures:
            raise ValueError(f"{where}: temperatures must be >= 0, got {self.temperatures}")
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}: dtype must be one of {list(DTYPES)}, got {self.dtype!r}")


def _relative_to(spec: str | dict, folder: Path) -> str | dict:
    """A config file's 'NAME=DIR[:k][+ngram|+suffix][@C]' (or speculative_config.model) with a relative DIR names
    a folder beside the config file."""
    if isinstance(spec, dict):
        config = spec.get("speculative_config")
        if isinstance(config, dict) and isinstance(config.get("model"), str) and not Path(config["model"]).is_absolute():
            return {**spec, "speculative_config": {**config, "model": str(folder / config["model"])}}
        return spec
    if "=" not in spec:
        return spec
    name, _, rest = spec.partition("=")
    rest, confidence = _split_confidence(rest)
    rest, hybrid = _split_hybrid(rest)
    draft, sep, k = rest.partition(":")
    return f"{name}={draft if Path(draft).is_absolute() else folder / draft}{sep}{k}{hybrid}{confidence}"


HYBRID_TAILS = ("+ngram", "+suffix")
NGRAM_MATCH = {"prompt_lookup_max": 4, "prompt_lookup_min": 2}  # the ngram row's, and the +ngram rows'


def _split_hybrid(rest: str) -> tuple[str, str]:
    """'DIR[:k]+ngram' or 'DIR[:k]+suffix' -> ('DIR[:k]', the tail); ('DIR[:k]', '') without one."""
    for tail in HYBRID_TAILS:
        if rest.endswith(tail):
            return rest[:-len(tail)], tail
    return rest, ""


def _split_confidence(rest: str) -> tuple[str, str]:
    """'DIR[:k][+hybrid]@C' -> ('DIR[:k][+hybrid]', '@C') when C is written as a number (digits, '.', exponent);
    any other '@' belongs to the folder's name."""
    head, at, tail = rest.rpartition("@")
    return (head, at + tail) if at and (tail == AUTO or re.fullmatch(r"[0-9.eE+-]+", tail)) else (rest, "")


@dataclass
class Row:
    method: str
    dataset: str
    temperature: float
    batch_size: int
    tokens_per_second: float
    tokens_per_second_runs: list[float]
    speedup: float
    acceptance_length: float
    tokens_per_step: float  # output tokens per request-step, drafting or not (about: vLLM counts drafts accepted
    # past a request's stop): comparable across methods
    acceptance_per_position: list[float]
    draft_time_share: float | None
    greedy_identical: bool | None  # float32, T = 0, against no speculation; None: not checked / no speculation
    output_tokens: int
    seconds: float


def parse_methods(specs: list[str]) -> list[Method]:
    """'none', 'ngram[:k]', 'suffix[:k]', or 'NAME=DRAFT_DIR[:k][+ngram|+suffix][@C]' (any draft folder vLLM or
    vllm-ptp loads; '+ngram' / '+suffix': vllm-ptp's hybrid mode, '@C': its min_draft_confidence, both for its own
    drafts)."""
    methods = []
    for spec in specs:
        if isinstance(spec, dict):
            methods.append(_method_from_object(spec))
        elif spec == "none":
            methods.append(Method("none", None))
        elif spec.startswith("ngram") and "=" not in spec:
            k = int(spec.split(":")[1]) if ":" in spec else 3
            methods.append(Method(f"ngram k={k}", {"method": "ngram", "num_speculative_tokens": k, **NGRAM_MATCH}))
        elif spec.startswith("suffix") and "=" not in spec:
            k = int(spec.split(":")[1]) if ":" in spec else 3
            methods.append(Method(f"suffix k={k}", {"method": "suffix", "num_speculative_tokens": k}))
        elif "=" in spec:
            name, _, rest = spec.partition("=")
            rest, confidence = _split_confidence(rest)
            try:
                threshold = ({"min_draft_confidence": AUTO if confidence == "@" + AUTO else float(confidence[1:])}
                             if confidence else {})
            except ValueError:
                raise ValueError(f"method {spec!r}: '@C' needs a number C in (0, 1), or 'auto'") from None
            rest, hybrid = _split_hybrid(rest)
            folder, _, k = rest.partition(":")
            config = {"model": folder, **_vllm_method_of(folder, spec)}
            if hybrid == "+ngram":
                config.update(hybrid="ngram", **NGRAM_MATCH)
            elif hybrid == "+suffix":
                config.update(hybrid="suffix")
            config.update(threshold)
            methods.append(Method(name, {**config, **({"num_speculative_tokens": int(k)} if k else {})}))
        else:
            raise ValueError(f"method {spec!r}: expected 'none', 'ngram[:k]', 'suffix[:k]' or "
                             f"'NAME=DRAFT_DIR[:k][+ngram|+suffix][@C]'")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    return methods


def _method_from_object(spec: dict) -> Method:
    name, config = spec.get("name"), spec.get("speculative_config")
    if (set(spec) != {"name", "speculative_config"} or not isinstance(name, str) or name == "none"
            or not isinstance(config, dict) or not config):  # 'none' names the baseline every ratio is against
        raise ValueError(f"method {spec!r}: expected {{\"name\": NAME, \"speculative_config\": {{...}}}} (vLLM's "
                         f"speculative config)")
    return Method(name, dict(config))


# vLLM 0.32 takes the method of its own draft kinds from the config only when the draft is the served model, not
# when it is passed as speculative_config.model; vllm-ptp's own kinds (ptp, cp) are recognised by the plugin.
VLLM_DRAFT_METHODS = {"eagle3": {"method": "eagle3"}, "peagle": {"method": "eagle3", "parallel_drafting": True},
                      "medusa": {"method": "medusa"}}


def _vllm_method_of(folder: str, spec: str) -> dict:
    path = Path(folder, "config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"method {spec!r}: cannot read {path} ({e}); expected a draft folder") from e
    return VLLM_DRAFT_METHODS.get(config.get("speculators_model_type") or config.get("model_type"), {})


def prompt_set(target: str, dataset: str, n: int, seed: int = 0, max_prompt_tokens: int | None = None) -> list[str]:
    """Held-out chat prompts (sharegpt, humaneval) or a user JSONL of conversations, in the target's chat template;
    with max_prompt_tokens, the first n of those that fit."""
    from vllm_ptp.data import chat_prompts, load_conversations
    conversations = load_conversations(dataset, "heldout", n if max_prompt_tokens is None else None, seed=seed)
    return chat_prompts(target, conversations, max_prompt_tokens=max_prompt_tokens)[:n]


def setting_prompts(target: str, config: BenchConfig) -> dict[tuple, list[str]]:
    """(dataset, temperature, batch size) -> its own `prompts` held-out prompts, each short enough to leave room
    for max_tokens. An engine runs every setting in turn, and one that learns from earlier requests (vLLM's suffix
    decoding keeps a tree of their outputs) would otherwise meet the answers to the same prompts again."""
    from transformers import AutoConfig
    context = config.max_model_len or AutoConfig.from_pretrained(target).max_position_embeddings
    per_dataset = [(t, b) for t in config.temperatures for b in config.batch_sizes]
    texts = {}
    for dataset in config.datasets:
        pool = prompt_set(target, dataset, config.prompts * len(per_dataset), config.seed,
                          max_prompt_tokens=context - config.max_tokens)
        if len(pool) < config.prompts * len(per_dataset):
            raise ValueError(f"bench: {dataset} has {len(pool)} held-out prompts that leave room for max_tokens; "
                             f"each of its {len(per_dataset)} settings (temperature x batch size) takes "
                             f"{config.prompts} of its own: lower 'prompts' or the settings")
        for i, (temperature, batch) in enumerate(per_dataset):
            texts[(dataset, temperature, batch)] = pool[i * config.prompts:(i + 1) * config.prompts]
    return texts


def run_bench(target: str, config: BenchConfig, out: str | Path | None = None, progress: bool = True) -> list[Row]:
    from vllm_ptp.onednn_cache import bound_primitive_cache
    # every engine with the oneDNN cache our drafts get (oneDNN reads it once per process, so the order would matter)
    bound_primitive_cache()
    from tqdm import tqdm
    from vllm import SamplingParams

    from vllm_ptp.bench.measure import engine, run_prompts
    from vllm_ptp.machine import bf16_warning, resolve_dtype
    methods = parse_methods(config.methods)
    dtype = resolve_dtype(config.dtype)
    if warning := bf16_warning(dtype):
        print(f"vllm-ptp bench: {warning}", flush=True)
    settings = [(d, t, b) for d in config.datasets for t in config.temperatures for b in config.batch_sizes]
    texts = setting_prompts(target, config)
    # vLLM's own methods verified against the requests' real temperatures on CPU too (vllm_integration.cpu_sampler_fixes), for a fair T > 0
    engine_kwargs = {"enforce_eager": True, "max_model_len": config.max_model_len, "seed": config.seed,
                     "fix_cpu_sampler_for_all": True}
    started = time.time()
    runs: dict[tuple, list] = {}
    total = len(methods) * config.repeats * len(settings) + (len(methods) if config.identity_tokens else 0)
    bar = tqdm(total=total, desc="bench", disable=not progress)
    for repeat in range(config.repeats):
        shift = repeat % len(methods)
        for method in methods[shift:] + methods[:shift]:
            with engine(target, method.speculative_config, dtype=dtype, **engine_kwargs) as live:
                for dataset, temperature, batch in settings:
                    bar.set_postfix_str(f"{method.name} {dataset} T={temperature:g} batch {batch}")
                    params = SamplingParams(temperature=temperature, max_tokens=config.max_tokens)
                    runs.setdefault((method.name, dataset, temperature, batch), []).append(
                        run_prompts(live.llm, texts[(dataset, temperature, batch)], params, batch_size=batch,
                                    timer_file=live.timer_file))
                    bar.update()
    by_dataset = {d: [p for (dataset, _, _), prompts in texts.items() if dataset == d for p in prompts]
                  for d in config.datasets}
    identical = (_greedy_identity(target, methods, by_dataset, config, engine_kwargs, bar) if config.identity_tokens
                 else {})
    bar.close()
    rows = _rows(methods, settings, runs, identical)
    if out:
        write_outputs(rows, config, dtype, target, Path(out), time.time() - started)
    print(markdown_table(rows))
    return rows


def _greedy_identity(target, methods, texts, config, engine_kwargs, bar) -> dict[tuple, bool]:
    """(method, dataset) -> greedy outputs identical to no speculation's, float32, all prompts batched."""
    from vllm import SamplingParams

    from vllm_ptp.bench.measure import engine, run_prompts
    params = SamplingParams(temperature=0.0, max_tokens=config.identity_tokens)
    outputs = {}
    for method in methods:
        bar.set_postfix_str(f"{method.name} greedy identity (float32)")
        with engine(target, method.speculative_config, dtype="float32", **engine_kwargs) as live:
            for dataset, prompts in texts.items():
                outputs[(method.name, dataset)] = run_prompts(live.llm, prompts, params).outputs
        bar.update()
    return {(m.name, d): outputs[(m.name, d)] == outputs[("none", d)]
            for m in methods for d in texts if m.speculative_config is not None and ("none", d) in outputs}


def _rows(methods, settings, runs, identical) -> list[Row]:
    rows = []
    for dataset, temperature, batch in settings:
        base = runs.get(("none", dataset, temperature, batch))
        base_tps = sum(r.tokens_per_second for r in base) / len(base) if base else None
        for method in methods:
            rs = runs[(method.name, dataset, temperature, batch)]
            tps = [r.tokens_per_second for r in rs]
            drafts = sum(r.drafts for r in rs)
            accepted = sum(r.accepted for r in rs)
            per_pos = [sum(col) / drafts for col in zip(*[r.accepted_per_position for r in rs])] if drafts else []
            seconds = sum(r.seconds for r in rs)
            drafting = [r.draft_seconds for r in rs if r.draft_seconds is not None]
            mean_tps = sum(tps) / len(tps)
            output = sum(r.output_tokens for r in rs)  # each request-step emits 1 + its accepted drafts
            rows.append(Row(
                method=method.name, dataset=dataset, temperature=temperature, batch_size=batch,
                tokens_per_second=round(mean_tps, 2), tokens_per_second_runs=[round(x, 2) for x in tps],
                speedup=round(mean_tps / base_tps, 3) if base_tps else float("nan"),
                acceptance_length=round(1 + accepted / drafts, 3) if drafts else 1.0,
                tokens_per_step=round(output / (output - accepted), 3) if output > accepted else 1.0,
                acceptance_per_position=[round(x, 3) for x in per_pos],
                draft_time_share=round(sum(drafting) / seconds, 3) if drafting and seconds else None,
                greedy_identical=identical.get((method.name, dataset)),
                output_tokens=output, seconds=round(seconds, 1)))
    return rows


def write_outputs(rows: list[Row], config: BenchConfig, dtype: str, target: str, out: Path,
                  wall_seconds: float) -> None:
    from vllm_ptp.machine import describe
    out.mkdir(parents=True, exist_ok=True)
    machine = describe()
    bf16 = {True: "native bf16", False: "no native bf16", None: "bf16 support unknown"}[machine["native_bf16"]]
    report = {"config": asdict(config), "dtype": dtype, "target": target, "machine": machine,
              "wall_seconds": round(wall_seconds, 1), "rows": [asdict(r) for r in rows]}
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    (out / "bench.md").write_text(f"Target {target}; {machine['cuda'] or machine['processor']} ({bf16}), "
                                  f"{machine['cpus']} CPUs; "
                                  f"{config.prompts} prompts per set, {config.max_tokens} new tokens, "
                                  f"{config.repeats} repeat(s), {dtype}; wall time {wall_seconds / 60:.1f} "
                                  f"min.\n\n{summary_table([asdict(r) for r in rows])}\n\n{markdown_table(rows)}\n")
    plot(rows, out / "bench.png")


def plot(rows: list[Row], path: Path) -> None:
    """Acceptance length and speed-up per method, one bar group per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = list(dict.fromkeys(r.method for r in rows))
    settings = list(dict.fromkeys((r.dataset, r.temperature, r.batch_size) for r in rows))
    by_key = {(r.method, r.dataset, r.temperature, r.batch_size): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(settings) * len(methods) / 3), 8))
    width = 0.8 / len(methods)
    for ax, metric, label in ((axes[0], "acceptance_length", "acceptance length (tokens / target step)"),
                              (axes[1], "speedup", "speed-up vs no speculation")):
        for i, m in enumerate(methods):
            values = [getattr(by_key[(m, *s)], metric) for s in settings]
            ax.bar([j + i * width for j in range(len(settings))], values, width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(settings))])
        ax.set_xticklabels([f"{d}\nT={t:g} b={b}" for d, t, b in settings], fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(1.0, color="gray", linewidth=0.8)
    axes[0].legend(fontsize=8, ncol=min(4, len(methods)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| dataset | T | batch | method | tokens/s | speed-up | acceptance length | tokens / step "
             "| per-position acceptance | draft time | greedy identical (fp32) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "" if r.draft_time_share is None else f"{r.draft_time_share:.0%}"
        same = "" if r.greedy_identical is None else ("yes" if r.greedy_identical else "NO")
        lines.append(f"| {r.dataset} | {r.temperature:g} | {r.batch_size} | {r.method} | {r.tokens_per_second:.1f} "
                     f"| {r.speedup:.2f}x | {r.acceptance_length:.2f} | {r.tokens_per_step:.2f} "
                     f"| {', '.join(f'{x:.2f}' for x in r.acceptance_per_position)} | {share} | {same} |")
    return "\n".join(lines)


def summary_table(rows: list[dict]) -> str:
    """One Markdown line per method: acceptance length at each temperature and speed-up at each batch size (means over
    the other settings), drafting share at batch 1, greedy identity over every prompt set."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    temps = sorted({r["temperature"] for r in rows})
    batches = sorted({r["batch_size"] for r in rows})
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    head = ([f"AL T={t:g}" for t in temps] + [f"speed-up batch {b}" for b in batches]
            + [f"draft time batch {batches[0]}", "greedy identical (fp32)"])
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        cells = [f"{mean([r['acceptance_length'] for r in mine if r['temperature'] == t]):.2f}" for t in temps]
        cells += [f"{mean([r['speedup'] for r in mine if r['batch_size'] == b]):.2f}x" for b in batches]
        shares = [r["draft_time_share"] for r in mine if r["batch_size"] == batches[0] and r["draft_time_share"]]
        cells.append(f"{mean(shares):.0%}" if shares else "")
        same = {r["greedy_identical"] for r in mine} - {None}
        cells.append("" if not same else ("yes" if same == {True} else "NO"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short_table(rows: list[dict]) -> str:
    """Per method and batch size, means over the other settings: acceptance length and speed-up."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    batches = sorted({r["batch_size"] for r in rows})
    head = "".join(f"{f'batch {b}: AL / speed-up':>26}" for b in batches)
    lines = [f"{'method':22}{head}"]
    for m in methods:
        cells = ""
        for b in batches:
            sel = [r for r in rows if r["method"] == m and r["batch_size"] == b]
            al = sum(r["acceptance_length"] for r in sel) / len(sel)
            sp = sum(r["speedup"] for r in sel) / len(sel)
            cells += f"{f'{al:.2f} / {sp:.2f}x':>26}"
        lines.append(f"{m:22}{cells}")
    return "\n".join(lines)
