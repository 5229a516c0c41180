"""Where the next vLLM breaks us: every touch point of `vllm_integration.TOUCH_POINTS` looked up in another vLLM's source
(a wheel, read as a zip: nothing of it is imported) and compared with the installed vLLM's.

For each touch point: does the owner exist, does the attribute exist (in the class or a base class it imports), did
the signature change, did the body change. A method found unchanged in signature may still behave differently: the
body column says where to read.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vllm_ptp.vllm_integration import TOUCH_POINTS, TouchPoint


class SourceTree:
    """Python sources of a vLLM, from a wheel or an installed package folder, by module name."""

    def __init__(self, location: Path):
        self.location = location
        self._zip = zipfile.ZipFile(location) if location.suffix == ".whl" else None
        self._trees: dict[str, ast.Module | None] = {}

    def module(self, name: str) -> ast.Module | None:
        if name not in self._trees:
            self._trees[name] = None
            for path in (name.replace(".", "/") + ".py", name.replace(".", "/") + "/__init__.py"):
                text = self._read(path)
                if text is not None:
                    self._trees[name] = ast.parse(text)
                    break
        return self._trees[name]

    def _read(self, path: str) -> str | None:
        if self._zip is not None:
            try:
                return self._zip.read(path).decode()
            except KeyError:
                return None
        file = self.location.parent / path  # location is the package folder (…/site-packages/vllm)
        return file.read_text() if file.is_file() else None


def installed_vllm() -> SourceTree:
    spec = importlib.util.find_spec("vllm")  # a top-level find_spec does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("vLLM is not installed here")
    return SourceTree(Path(list(spec.submodule_search_locations)[0]))


def vllm_wheel(version: str, folder: Path) -> Path:
    """`pip download --no-deps vllm==version` into folder (once)."""
    found = sorted(folder.glob(f"vllm-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"vllm=={version}", "-d", str(folder)], check=True)
        found = sorted(folder.glob(f"vllm-{version}-*.whl"))
    return found[0]


def _imported_from(tree: ast.Module, name: str) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and any((a.asname or a.name) == name for a in node.names):
            return node.module
    return None


def _top_level(tree: ast.Module, name: str) -> ast.AST | None:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return node
    return None


def find(tree_source: SourceTree, module: str, owner: str | None, attribute: str, depth: int = 0
         ) -> tuple[str, ast.AST | None]:
    """-> (status, node): status "ok", "module missing", "owner missing" or "attribute missing"."""
    tree = tree_source.module(module)
    if tree is None:
        return "module missing", None
    if owner is None:
        node = _top_level(tree, attribute)
        return ("ok", node) if node is not None else ("attribute missing", None)
    cls = _top_level(tree, owner)
    if isinstance(cls, ast.ImportFrom) and depth < 4:
        return find(tree_source, cls.module, owner, attribute, depth + 1)
    if not isinstance(cls, ast.ClassDef):
        return "owner missing", None
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attribute:
            return "ok", node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == attribute:
            return "ok", node  # a dataclass field
    for base in cls.bases:  # inherited: follow a base class imported by name
        if isinstance(base, ast.Name) and depth < 4:
            where = _imported_from(tree, base.id) or (module if _top_level(tree, base.id) else None)
            if where:
                status, node = find(tree_source, where, base.id, attribute, depth + 1)
                if status == "ok":
                    return status, node
    return "attribute missing", None


def signature(node: ast.AST) -> str:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        return f"({ast.unparse(node.args)}){returns}"
    if isinstance(node, ast.ImportFrom):
        return f"from {node.module} import"
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        return "assignment"
    return type(node).__name__


def body(node: ast.AST) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


@dataclass
class Finding:
    point: TouchPoint
    status: str       # ok | signature changed | module / owner / attribute missing
    body_changed: bool
    detail: str

    @property
    def name(self) -> str:
        return f"{self.point.module}:{self.point.owner + '.' if self.point.owner else ''}{self.point.attribute}"


def probe(candidate: SourceTree, reference: SourceTree) -> list[Finding]:
    findings = []
    for point in TOUCH_POINTS:
        status, node = find(candidate, point.module, point.owner, point.attribute)
        _, known = find(reference, point.module, point.owner, point.attribute)
        if node is None or known is None:
            findings.append(Finding(point, status if node is None else "missing in the reference", False, ""))
            continue
        old, new = signature(known), signature(node)
        changed = old != new
        findings.append(Finding(point, "signature changed" if changed else "ok", body(node) != body(known),
                                f"{old} -> {new}" if changed else ""))
    return findings


def report(findings: list[Finding], candidate: str, reference: str) -> str:
    lines = [f"Touch points of vllm-ptp in {candidate}, compared with {reference}:", "",
             "| touch point | kind | status | body changed | detail |", "|---|---|---|---|---|"]
    for f in findings:
        lines.append(f"| `{f.name}` | {f.point.kind} | {f.status} | {'yes' if f.body_changed else 'no'} | "
                     f"{f.detail.replace('|', '/')} |")
    broken = [f for f in findings if f.status != "ok"]
    lines += ["", f"{len(findings) - len(broken)} of {len(findings)} touch points found with the same signature; "
                  f"{sum(f.body_changed for f in findings)} bodies changed."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="vllm-ptp compat-probe", description=__doc__.splitlines()[0])
    parser.add_argument("candidate", help="a vLLM version (downloaded with pip, --no-deps) or a .whl file")
    parser.add_argument("--wheels", default=None, help="folder for downloaded wheels (default: a temp folder)")
    a = parser.parse_args(argv)
    if a.candidate.endswith(".whl"):
        wheel = Path(a.candidate)
    else:
        folder = Path(a.wheels) if a.wheels else Path(tempfile.mkdtemp(prefix="vllm_wheel_"))
        folder.mkdir(parents=True, exist_ok=True)
        wheel = vllm_wheel(a.candidate, folder)
    reference = installed_vllm()
    findings = probe(SourceTree(wheel), reference)
    print(report(findings, wheel.name, f"the installed vLLM ({reference.location})"))
    return 0 if all(f.status == "ok" for f in findings) else 1
