"""The plugin loads in vLLM's multiprocess engines: the default one (front end, EngineCore and worker processes)
and tensor parallelism (one worker per shard), with greedy output identical to plain vLLM at TP=1."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_runs import generate
from multiprocess_run import PROMPTS

pytestmark = pytest.mark.engine


def run_engines(target, tensor_parallel_size, drafts, **env) -> dict:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1", **env)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("multiprocess_run.py")), str(target),
                           str(tensor_parallel_size), *map(str, drafts)], env=env, capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_cp_heads_in_multiprocess_engine(tiny_target, tiny_cp):
    result = run_engines(tiny_target, 1, [tiny_cp])
    spec = result["spec"][str(tiny_cp)]
    assert spec["outputs"] == result["plain"]
    assert spec["drafts"] > 0 and spec["accepted"] > 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallelism on the CPU backend needs 2 cores")
def test_tensor_parallel_target_with_our_drafts(tiny_target, tiny_cp, tiny_ptp):
    """TP=2 (vLLM's CPU backend binds one core per worker: VLLM_CPU_OMP_THREADS_BIND) with CP heads and a PTP
    draft: greedy output identical to plain vLLM at TP=1 and at TP=2, and the drafts are accepted."""
    from vllm import SamplingParams
    cores = sorted(os.sched_getaffinity(0))[:2]
    result = run_engines(tiny_target, 2, [tiny_cp, tiny_ptp], VLLM_CPU_OMP_THREADS_BIND=f"{cores[0]}|{cores[1]}")
    single = generate(tiny_target, PROMPTS, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))
    assert result["plain"] == single.outputs
    for draft in (tiny_cp, tiny_ptp):
        spec = result["spec"][str(draft)]
        assert spec["outputs"] == single.outputs, draft
        assert spec["drafts"] > 0 and spec["accepted"] > 0, draft
