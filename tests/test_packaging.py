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
    modules |= {f"vllm_ptp/kernels/{p.relative_to(ROOT / 'kernels')}" for p in (ROOT / "kernels").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert not any(n.startswith("kernels/") for n in names), "the kernels install as vllm_ptp.kernels only"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vllm_ptp = vllm_ptp.plugin:register" in text and "vllm-ptp = vllm_ptp.cli:main" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_missing_shipped_drafts_are_named_at_start(monkeypatch, tmp_path):
    from vllm_ptp.bench import demo
    monkeypatch.setattr(demo, "SHIPPED", tmp_path / "nowhere")
    with pytest.raises(SystemExit, match=r"the shipped draft ptp_smollm2 is not at .*nowhere/ptp_smollm2.*pass your own"):
        demo.default_drafts()


def test_the_top_level_kernels_folder_is_vllm_ptp_kernels_and_never_a_bare_kernels():
    """The repository's kernels/ installs inside our namespace; no module imports a bare `kernels`, and from the
    repository root (where `kernels` is importable by its folder name) transformers still sees no Hugging Face
    `kernels` package, and its probe loads nothing of vllm-ptp."""
    import ast

    import vllm_ptp.kernels
    assert Path(vllm_ptp.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"
    for path in list((ROOT / "vllm_ptp").rglob("*.py")) + list((ROOT / "kernels").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n == "kernels" or n.startswith("kernels.") for n in names), path
    probe = ("import sys; from transformers.utils import is_kernels_available; "
             "print(is_kernels_available(), 'kernels' in sys.modules, 'vllm_ptp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    # transformers imported the folder by its bare name, and it stayed empty: nothing of vllm-ptp was loaded
    assert out.returncode == 0 and out.stdout.split() == ["False", "True", "False"], out.stdout + out.stderr[-2000:]
