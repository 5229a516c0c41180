"""What `pip install .` gives: every module in the wheel, the entry points, and a clear message where the shipped
drafts (which live in the repository, not the package) are absent."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_and_the_entry_points(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("vllm_ptp-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "vllm_ptp").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vllm_ptp = vllm_ptp.plugin:register" in text and "vllm-ptp = vllm_ptp.cli:main" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_missing_shipped_drafts_are_named_at_start(monkeypatch, tmp_path):
    from vllm_ptp.bench import demo
    monkeypatch.setattr(demo, "SHIPPED", tmp_path / "nowhere")
    with pytest.raises(SystemExit, match=r"the shipped draft ptp_smollm2 is not at .*nowhere/ptp_smollm2.*pass your own"):
        demo.default_drafts()
