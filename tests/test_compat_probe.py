"""The compatibility probe finds every touch point in the installed vLLM, and reports what another vLLM's source
changed: a renamed method, a changed signature. Against a real newer wheel when one is at hand."""
import os
import zipfile
from pathlib import Path

import pytest

from vllm_ptp.compat_probe import SourceTree, installed_vllm, probe, report
from vllm_ptp.vllm_integration import TOUCH_POINTS


def test_every_touch_point_is_in_the_installed_vllm():
    reference = installed_vllm()
    findings = probe(reference, reference)
    assert [f.name for f in findings if f.status != "ok" or f.body_changed] == []


def fake_wheel(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A wheel holding the installed sources of the touched modules, with text replaced in some of them."""
    reference = installed_vllm()
    wheel = tmp_path / "vllm-9.9.9-py3-none-any.whl"
    from vllm_ptp.vllm_integration import TOUCH_POINTS
    modules = {p.module for p in TOUCH_POINTS} | {"vllm.v1.spec_decode.llm_base_proposer"}
    with zipfile.ZipFile(wheel, "w") as z:
        for module in modules:
            path = module.replace(".", "/") + ".py"
            file = reference.location.parent / path
            if not file.is_file():
                continue
            text = file.read_text()
            if module in edits:
                old, new = edits[module]
                assert old in text, (module, old)
                text = text.replace(old, new)
            z.writestr(path, text)
    return wheel


def test_a_renamed_method_and_a_changed_signature_are_reported(tmp_path):
    wheel = fake_wheel(tmp_path, {
        "vllm.v1.worker.gpu_model_runner": ("def _input_fits_in_drafter(", "def _input_fits_in_draft_model("),
        "vllm.v1.sample.rejection_sampler": ("def expand_batch_to_tokens(", "def expand_batch_to_tokens(extra, "),
    })
    findings = {f.name: f for f in probe(SourceTree(wheel), installed_vllm())}
    assert findings["vllm.v1.worker.gpu_model_runner:GPUModelRunner._input_fits_in_drafter"].status == \
        "attribute missing"
    changed = findings["vllm.v1.sample.rejection_sampler:expand_batch_to_tokens"]
    assert changed.status == "signature changed" and "-> (extra, " in changed.detail
    others = [f for name, f in findings.items() if name not in (
        "vllm.v1.worker.gpu_model_runner:GPUModelRunner._input_fits_in_drafter",
        "vllm.v1.sample.rejection_sampler:expand_batch_to_tokens")]
    assert all(f.status == "ok" for f in others), [f.name for f in others if f.status != "ok"]
    text = report(list(findings.values()), wheel.name, "installed")
    assert f"{len(TOUCH_POINTS) - 2} of {len(TOUCH_POINTS)} touch points" in text


@pytest.mark.skipif(not os.environ.get("VLLM_PTP_PROBE_WHEEL"),
                    reason="set VLLM_PTP_PROBE_WHEEL to a vLLM wheel (pip download --no-deps vllm==X)")
def test_probe_of_a_real_wheel_runs():
    wheel = Path(os.environ["VLLM_PTP_PROBE_WHEEL"])
    findings = probe(SourceTree(wheel), installed_vllm())
    assert len(findings) == len({f.name for f in findings}) > 0
    print(report(findings, wheel.name, "installed"))  # the result; nothing is asserted about another release
