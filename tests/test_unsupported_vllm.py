"""On a vLLM outside the supported range the plugin patches nothing: engines without our methods generate exactly as
without the plugin, and a draft folder of ours stops its engine at start-up with the version message."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def run(target, version, drafts, **env):
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("unsupported_vllm_run.py")), str(target),
                           version, *map(str, drafts)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), proc.stderr


def test_unsupported_vllm_leaves_other_engines_alone_and_refuses_our_drafts(tiny_target, tiny_ptp, tiny_cp):
    faked, log = run(tiny_target, "0.33.0", [tiny_ptp, tiny_cp])
    without_plugin, _ = run(tiny_target, "-", [], VLLM_PLUGINS="no-such-plugin")
    assert faked["plain"] == without_plugin["plain"]
    assert faked["ngram"] == without_plugin["ngram"]
    for draft in (tiny_ptp, tiny_cp):
        error = faked["errors"][str(draft)]
        assert error is not None and "vllm-ptp supports vLLM 0.32.0" in error and "installed vLLM is 0.33.0" in error
    assert log.count("vllm-ptp is inactive") >= 1


def test_a_patch_failing_half_way_is_rolled_back():
    script = """
import vllm_ptp.vllm_integration as integration
from vllm_ptp.vllm_integration import registry
from vllm.config.speculative import SpeculativeConfig
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
before = (SpeculativeConfig.__post_init__, GPUModelRunner.__init__, GPUModelRunner._sample)
calls, replace = [], registry._replace
def failing(owner, attribute, replacement, name):
    calls.append(name)
    if len(calls) == 3:
        raise RuntimeError("simulated failure")
    replace(owner, attribute, replacement, name)
registry._replace = failing
integration.install()
assert len(calls) == 3
assert (SpeculativeConfig.__post_init__, GPUModelRunner.__init__, GPUModelRunner._sample) == before
try:
    SpeculativeConfig(method="cp", model="x", num_speculative_tokens=2)
except Exception as e:
    assert "Input should be" in str(e), e
else:
    raise AssertionError("method 'cp' accepted after the roll-back")
print("ROLLED BACK")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "ROLLED BACK" in proc.stdout, proc.stderr[-3000:]
    assert "could not patch vLLM" in proc.stderr and "simulated failure" in proc.stderr
