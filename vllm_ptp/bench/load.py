"""Load test of the OpenAI-compatible server: many concurrent completions without and with a draft.

For each configuration a fresh server (vllm_ptp.bench.server.openai_server) gets warm-up requests, then `requests`
streamed completions from `concurrency` concurrent clients over a mix of prompts, greedy and seeded sampled ones,
sent by `vllm bench serve`'s own request function. Recorded: failures, end-to-end latency, time to first token (TTFT),
time per output token after the first (TPOT) and inter-token latency (ITL) percentiles, throughput, and the resident
memory (psutil) of the server's process tree (the API server plus vLLM's engine-core child) after warm-up, at its
peak and at the end. Speculative decoding changes TPOT and ITL (several tokens per step arrive together) more than
TTFT.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from vllm_ptp.bench.server import Server, accepted_per_position, get_text, is_healthy, metric_total, openai_server
from vllm_ptp.engine_settings import EngineSettings
from vllm_ptp.onednn_cache import CAPACITY, CAPACITY_VARIABLE

RSS_SAMPLE_SECONDS = 0.5
RSS_TIMELINE_SECONDS = 5.0
PROMPT_CHARS = 1000  # long enough to vary, short enough for small targets' context
FAILURE_EXAMPLES = 5

BUILTIN_PROMPTS = [
    "Explain the difference between a list and a tuple in Python.",
    "Write a haiku about autumn rain.",
    "def fibonacci(n):",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "What are the health benefits of drinking water?",
    "Translate 'Where is the train station?' into French and Spanish.",
    "Give me five ideas for a birthday party for a ten-year-old.",
    "SELECT name, COUNT(*) FROM orders GROUP BY",
    "How does a refrigerator keep food cold?",
    "Write a short email asking my manager for a day off next Friday.",
    "List the planets of the solar system in order from the sun.",
    "class Stack:\n    def __init__(self):",
]


@dataclass
class LoadSettings:
    requests: int = 1000
    concurrency: int = 16
    max_tokens: int = 32
    warmup: int = 32
    rss_growth_mb: float = 300.0
    prompt_sources: str = "sharegpt,humaneval"
    prompts: int = 64
    startup_timeout: float = 600.0


@dataclass
class LoadRun:
    name: str
    speculative_config: dict | None
    requests: int
    failures: int
    failure_examples: list[str]
    seconds: float
    requests_per_second: float
    output_tokens: int
    output_tokens_per_second: float
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    itl_p50_s: float
    itl_p99_s: float
    rss_after_warmup_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    rss_growth_mb: float
    rss_by_process_after_warmup_mb: dict[str, float] = field(default_factory=dict)
    rss_by_process_end_mb: dict[str, float] = field(default_factory=dict)
    rss_timeline: list[list[float]] = field(default_factory=list)  # [seconds into the load, MiB]
    rss_growth_second_half_mb: float = 0.0  # a leak keeps growing here; caches that fill up do not
    warmup_failures: int = 0
    healthy_after_load: bool = True
    spec_drafts: float = 0.0
    spec_accepted: float = 0.0
    spec_accepted_per_position: list[float] = field(default_factory=list)

    @property
    def acceptance_length(self) -> float | None:
        return 1 + self.spec_accepted / self.spec_drafts if self.spec_drafts else None


@dataclass
class RequestResult:
    ok: bool
    seconds: float
    output_tokens: int = 0
    error: str = ""
    ttft: float = 0.0  # seconds to the first streamed token
    itl: list[float] = field(default_factory=list)  # seconds between streamed chunks

    @property
    def tpot(self) -> float | None:
        """Seconds per output token after the first (None for a single token)."""
        return (self.seconds - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


# ----------------------------------------------------------------------------- memory

def _tree(root_pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / 2**20
    except psutil.NoSuchProcess:  # it ended while we looked
        return 0.0


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and its descendants, MiB (pages shared between them count once per process)."""
    return sum(_rss(p) for p in _tree(root_pid))


def rss_by_process_mb(root_pid: int) -> dict[str, float]:
    """tree_rss_mb split by process, keyed "name pid" (vLLM names its engine process VLLM::EngineCore)."""
    found = {}
    for process in _tree(root_pid):
        try:
            found[f"{process.name()} {process.pid}"] = round(_rss(process), 1)
        except psutil.NoSuchProcess:
            continue
    return found


class RssSampler:
    """Samples tree_rss_mb(pid) every RSS_SAMPLE_SECONDS in a background thread while running (a `with` block):
    the peak, and a timeline with a point every RSS_TIMELINE_SECONDS (does the growth level off?)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_mb = 0.0
        self.timeline: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.perf_counter()
        while True:
            now, mb = time.perf_counter() - start, tree_rss_mb(self.pid)
            self.peak_mb = max(self.peak_mb, mb)
            if not self.timeline or now - self.timeline[-1][0] >= RSS_TIMELINE_SECONDS:
                self.timeline.append([round(now, 1), round(mb, 1)])
            if self._stop.wait(RSS_SAMPLE_SECONDS):
                return


def rss_at(timeline: list[list[float]], seconds: float, default: float) -> float:
    """The last timeline sample taken at or before `seconds` (`default` if none was)."""
    earlier = [mb for at, mb in timeline if at <= seconds]
    return earlier[-1] if earlier else default


# ----------------------------------------------------------------------------- requests

def load_prompts(sources: str, limit: int) -> list[str]:
    """Held-out prompts of the given sources (`limit` of each), cut to PROMPT_CHARS; the built-in list if none
    of the sources is available."""
    from vllm_ptp.data import load_conversations
    prompts = []
    for source in filter(None, sources.split(",")):
        try:
            conversations = load_conversations(source, "heldout", limit)
        except FileNotFoundError:  # its data package is not installed
            continue
        prompts += [conversation[-1]["content"][:PROMPT_CHARS] for conversation in conversations]
    return prompts or list(BUILTIN_PROMPTS)


def request_body(model: str, prompts: list[str], index: int, max_tokens: int) -> dict:
    """Request `index` of the mix: prompts in turn; even requests greedy, odd ones sampled with seed `index`
    (temperature 0.7 or 1.0, every other one also top-p 0.9)."""
    body = {"model": model, "prompt": prompts[index % len(prompts)], "max_tokens": max_tokens}
    if index % 2 == 0:
        return {**body, "temperature": 0}
    body.update(temperature=0.7 if index % 4 == 1 else 1.0, seed=index)
    if index % 8 in (3, 7):
        body["top_p"] = 0.9
    return body


def send_all(base_url: str, bodies: list[dict], concurrency: int) -> list[RequestResult]:
    """The bodies as streamed completions, at most `concurrency` at a time, through vLLM's benchmark client."""
    return asyncio.run(_send_all(base_url, bodies, concurrency))


async def _send_all(base_url: str, bodies: list[dict], concurrency: int) -> list[RequestResult]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(body: dict) -> RequestResult:
            sampling = {k: v for k, v in body.items() if k not in ("model", "prompt", "max_tokens")}
            request = RequestFuncInput(prompt=body["prompt"], api_url=f"{base_url}/v1/completions", prompt_len=0,
                                       output_len=body["max_tokens"], model=body["model"], extra_body=sampling)
            async with limit:
                out = await async_request_openai_completions(request, session)
            if not out.success:
                return RequestResult(ok=False, seconds=out.latency, error=out.error.strip().splitlines()[-1][:300]
                                     if out.error.strip() else "no streamed token")
            return RequestResult(ok=True, seconds=out.latency, output_tokens=out.output_tokens or 0, ttft=out.ttft,
                                 itl=list(out.itl))
        return list(await asyncio.gather(*(one(body) for body in bodies)))


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile (a value that occurred); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(percent / 100 * len(ordered)) - 1, 0)]


# ----------------------------------------------------------------------------- one configuration

def run_config(name: str, target: str, speculative_config: dict | None, prompts: list[str], settings: LoadSettings,
               vllm_args: list[str], log_dir: Path) -> LoadRun:
    # vLLM's sampling with vllm-ptp's CPU fixes in both servers (without them the server without speculation dies
    # on the first seeded request whose prompt is prefilled in chunks: vllm_integration.cpu_sampler_fixes, bug 3)
    args = list(vllm_args) + ["--additional-config",
                              json.dumps(EngineSettings(fix_cpu_sampler_for_all=True).additional_config())]
    if speculative_config is not None:
        args += ["--speculative-config", json.dumps(speculative_config)]
    with openai_server(target, *args, env=server_env(), log_path=log_dir / f"server_{name}.log",
                       startup_timeout=settings.startup_timeout) as server:
        model = served_model(server.base_url)
        # warm-up: the mix continued past the measured requests
        warmup = [request_body(model, prompts, settings.requests + i, settings.max_tokens)
                  for i in range(settings.warmup)]
        measured = [request_body(model, prompts, i, settings.max_tokens) for i in range(settings.requests)]
        warmup_failures = sum(not r.ok for r in send_all(server.base_url, warmup, settings.concurrency))
        by_process_after_warmup = rss_by_process_mb(server.pid)
        rss_after_warmup = sum(by_process_after_warmup.values())
        spec_before = spec_counts(server)
        with RssSampler(server.pid) as sampler:
            start = time.perf_counter()
            results = send_all(server.base_url, measured, settings.concurrency)
            seconds = time.perf_counter() - start
        by_process_end = rss_by_process_mb(server.pid)
        rss_end = sum(by_process_end.values())
        healthy = is_healthy(server.base_url, timeout=30)
        spec = spec_counts(server, since=spec_before)
    run = summarize(name, speculative_config, results, seconds, rss_after_warmup, max(sampler.peak_mb, rss_end),
                    rss_end, spec)
    run.warmup_failures, run.healthy_after_load = warmup_failures, healthy
    run.rss_by_process_after_warmup_mb, run.rss_by_process_end_mb = by_process_after_warmup, by_process_end
    run.rss_timeline = sampler.timeline
    run.rss_growth_second_half_mb = rss_end - rss_at(sampler.timeline, seconds / 2, rss_after_warmup)
    return run


def served_model(base_url: str) -> str:
    return json.loads(get_text(f"{base_url}/v1/models"))["data"][0]["id"]


def spec_counts(server: Server, since: dict | None = None) -> dict:
    """The server's speculative-decoding counters (drafting steps, accepted tokens, per position), minus `since`;
    {} if the server does not answer (it died: the requests' failures tell)."""
    try:
        metrics = get_text(f"{server.base_url}/metrics")
    except OSError:
        return {}
    per_position = accepted_per_position(metrics)
    before = since or {"spec_drafts": 0.0, "spec_accepted": 0.0,
                       "spec_accepted_per_position": [0.0] * len(per_position)}
    drafts = metric_total(metrics, "vllm:spec_decode_num_drafts_total")
    accepted = metric_total(metrics, "vllm:spec_decode_num_accepted_tokens_total")
    return {"spec_drafts": drafts - before["spec_drafts"], "spec_accepted": accepted - before["spec_accepted"],
            "spec_accepted_per_position": [now - earlier for now, earlier in
                                           zip(per_position, before["spec_accepted_per_position"])]}


def server_env() -> dict:
    """Both servers run as vllm-ptp serves its drafts, so that they differ only in the draft: the bounded oneDNN
    primitive cache (vllm_ptp/onednn_cache.py; a value set in this process's environment wins)."""
    return {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1", CAPACITY_VARIABLE: os.environ.get(CAPACITY_VARIABLE, str(CAPACITY))}


def summarize(name: str, speculative_config: dict | None, results: list[RequestResult], seconds: float,
              rss_after_warmup: float, rss_peak: float, rss_end: float, spec: dict) -> LoadRun:
    succeeded = [r for r in results if r.ok]
    latencies = [r.seconds for r in succeeded]
    ttfts = [r.ttft for r in succeeded]
    tpots = [r.tpot for r in succeeded if r.tpot is not None]
    itls = [gap for r in succeeded for gap in r.itl]
    output_tokens = sum(r.output_tokens for r in succeeded)
    return LoadRun(
        name=name, speculative_config=speculative_config, requests=len(results),
        failures=len(results) - len(succeeded),
        failure_examples=[r.error for r in results if not r.ok][:FAILURE_EXAMPLES],
        seconds=seconds, requests_per_second=len(succeeded) / seconds, output_tokens=output_tokens,
        output_tokens_per_second=output_tokens / seconds, latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99), latency_max_s=max(latencies, default=0.0),
        ttft_p50_s=percentile(ttfts, 50), ttft_p99_s=percentile(ttfts, 99), tpot_p50_s=percentile(tpots, 50),
        tpot_p99_s=percentile(tpots, 99), itl_p50_s=percentile(itls, 50), itl_p99_s=percentile(itls, 99),
        rss_after_warmup_mb=rss_after_warmup, rss_peak_mb=rss_peak, rss_end_mb=rss_end,
        rss_growth_mb=rss_end - rss_after_warmup, **spec)


# ----------------------------------------------------------------------------- the whole test

def run_load(target: str, speculative_config: dict | None, settings: LoadSettings, out: Path,
             vllm_args: list[str] = ()) -> dict:
    """No speculation, then `speculative_config` (if given), each on a fresh server; writes out/load.json and
    out/load.md and returns what load.json holds ("problems" lists what failed the test)."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(settings.prompt_sources, settings.prompts)
    configs = [("none", None)]
    if speculative_config is not None:
        configs.append((Path(speculative_config.get("model", "draft")).name, speculative_config))
    runs = []
    for name, config in configs:
        runs.append(run_config(name, target, config, prompts, settings, list(vllm_args), out))
        print(f"{name}: {runs[-1].failures} failures, {runs[-1].requests_per_second:.2f} requests/s", flush=True)
    found = problems(runs, settings)
    report = {"target": str(target), "settings": asdict(settings), "vllm_args": list(vllm_args),
              "onednn_primitive_cache_capacity": server_env()[CAPACITY_VARIABLE], "prompts": len(prompts),
              "runs": [dict(asdict(r), acceptance_length=r.acceptance_length) for r in runs], "problems": found}
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "load.md").write_text(markdown_report(runs, settings, found))
    return report


def problems(runs: list[LoadRun], settings: LoadSettings) -> list[str]:
    """What fails the load test: a server that died, any failed request (warm-up included), resident memory
    growing past the bound after warm-up."""
    found = []
    for run in runs:
        if not run.healthy_after_load:
            found.append(f"{run.name}: the server did not answer /health after the load (its log: "
                         f"server_{run.name}.log)")
        if run.warmup_failures:
            found.append(f"{run.name}: {run.warmup_failures} warm-up requests failed")
        if run.failures:
            found.append(f"{run.name}: {run.failures} of {run.requests} requests failed, "
                         f"e.g. {run.failure_examples[0]}")
        if run.rss_growth_mb > settings.rss_growth_mb:
            found.append(f"{run.name}: resident memory grew {run.rss_growth_mb:.0f} MiB after warm-up "
                         f"(bound {settings.rss_growth_mb:.0f} MiB)")
    return found


def markdown_report(runs: list[LoadRun], settings: LoadSettings, found: list[str]) -> str:
    """The configurations side by side, then what failed the test."""
    rows = [
        ("requests", lambda r: str(r.requests)),
        ("failures", lambda r: str(r.failures)),
        ("requests/s", lambda r: f"{r.requests_per_second:.2f}"),
        ("output tokens/s", lambda r: f"{r.output_tokens_per_second:.1f}"),
        ("latency p50 (s)", lambda r: f"{r.latency_p50_s:.2f}"),
        ("latency p99 (s)", lambda r: f"{r.latency_p99_s:.2f}"),
        ("latency max (s)", lambda r: f"{r.latency_max_s:.2f}"),
        ("TTFT p50 / p99 (ms)", lambda r: f"{1e3 * r.ttft_p50_s:.0f} / {1e3 * r.ttft_p99_s:.0f}"),
        ("TPOT p50 / p99 (ms)", lambda r: f"{1e3 * r.tpot_p50_s:.1f} / {1e3 * r.tpot_p99_s:.1f}"),
        ("ITL p50 / p99 (ms)", lambda r: f"{1e3 * r.itl_p50_s:.1f} / {1e3 * r.itl_p99_s:.1f}"),
        ("RSS after warm-up (MiB)", lambda r: f"{r.rss_after_warmup_mb:.0f}"),
        ("RSS peak (MiB)", lambda r: f"{r.rss_peak_mb:.0f}"),
        ("RSS end (MiB)", lambda r: f"{r.rss_end_mb:.0f}"),
        ("RSS growth after warm-up (MiB)", lambda r: f"{r.rss_growth_mb:+.0f}"),
        ("RSS growth in the second half (MiB)", lambda r: f"{r.rss_growth_second_half_mb:+.0f}"),
        ("acceptance length", lambda r: "" if r.acceptance_length is None else f"{r.acceptance_length:.2f}"),
    ]
    header = f"{settings.requests} completions, {settings.concurrency} concurrent, up to {settings.max_tokens} tokens"
    lines = [header, "", "| | " + " | ".join(r.name for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(r) for r in runs) + " |" for label, cell in rows]
    lines += ["", *(f"FAILED: {problem}" for problem in found)] if found else []
    return "\n".join(lines) + "\n"
