"""The bottom of vllm_integration: what a touch point is, and applying the patched ones once, checked, undoable.

A touch point is one vLLM internal vllm-ptp depends on (module, owner class or None for the module, attribute) with
one line of why. Only kind "patched" is applied here: the attribute is replaced by `replacement`, and the original is
kept for the replacement to call for everything that is not ours. The other kinds are declared for readers and for
`vllm_ptp.compat_probe`: "swapped" (a module global replaced for the duration of one call), "overridden" (a method
our subclass overrides), "registered" (a registry or schema we add an entry to), "used" (called as it is).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import typing

logger = logging.getLogger("vllm.ptp")

KINDS = ("patched", "swapped", "overridden", "registered", "used")


@dataclasses.dataclass(frozen=True)
class TouchPoint:
    module: str
    owner: str | None
    attribute: str
    kind: str
    why: str
    replacement: typing.Callable | None = None  # kind "patched" only
    upstream: str | None = None  # the vLLM issue or pull request about the bug a patch works around

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"touch point {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if (self.kind == "patched") != (self.replacement is not None):
            raise ValueError(f"touch point {self.name}: a replacement goes with kind 'patched' and only with it")

    @property
    def name(self) -> str:
        return f"{self.owner or self.module.rsplit('.', 1)[-1]}.{self.attribute}"

    def owner_object(self):
        module = importlib.import_module(self.module)
        return module if self.owner is None else getattr(module, self.owner, None)


_originals: dict[str, typing.Any] = {}
_applied: list[tuple[typing.Any, str, typing.Any]] = []


def check_present(points: typing.Iterable[TouchPoint]) -> None:
    """Every target exists (the "used" ones are not imported: they may pull in optional dependencies)."""
    missing = []
    for point in points:
        if point.kind == "used":
            continue
        owner = point.owner_object()
        if owner is None or not hasattr(owner, point.attribute):
            missing.append(f"{point.module}:{point.name} (needed to {point.why})")
    if missing:
        raise AttributeError("not found in this vLLM: " + "; ".join(missing))


def apply(points: typing.Iterable[TouchPoint]) -> None:
    """Replace every "patched" target; a target already replaced is refused (an error, nothing half-done is kept by
    the caller: see roll_back)."""
    for point in points:
        if point.kind == "patched":
            _replace(point.owner_object(), point.attribute, point.replacement, point.name)
            logger.debug("vllm-ptp patched %s: %s", point.name, point.why)


def _replace(owner, attribute: str, replacement, name: str) -> None:
    if name in _originals:
        raise RuntimeError(f"vllm-ptp: {name} would be patched twice")
    original = owner.__dict__[attribute]
    _originals[name] = original
    _applied.append((owner, attribute, original))
    setattr(owner, attribute, replacement)


def original(name: str):
    """The vLLM attribute a replacement stands in for, e.g. original("GPUModelRunner._sample")."""
    return _originals[name]


def applied() -> bool:
    return bool(_applied)


def roll_back() -> None:
    while _applied:
        owner, attribute, value = _applied.pop()
        setattr(owner, attribute, value)
    _originals.clear()
