"""The plugin loads in vLLM's default multiprocess mode (front end, EngineCore and worker processes)."""
import json
import os
import subprocess
import sys
from pathlib import Path


def test_cp_heads_in_multiprocess_engine(tiny_target, tiny_cp):
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("multiprocess_run.py")), str(tiny_target),
                           str(tiny_cp)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["spec"] == result["plain"]
    assert result["drafts"] > 0 and result["accepted"] > 0
