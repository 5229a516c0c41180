"""The vLLM versions whose internals the touch points are written against: the one place the range lives."""
from __future__ import annotations

SUPPORTED_VLLM = "==0.32.0"  # a PEP 440 specifier; local build suffixes (+cpu, +cu129) pass


class UnsupportedVLLMVersion(RuntimeError):
    pass


def vllm_supported(version: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    try:
        return Version(version) in SpecifierSet(SUPPORTED_VLLM)
    except InvalidVersion:
        return False


def unsupported_message(version: str) -> str:
    return (f"vllm-ptp supports vLLM {SUPPORTED_VLLM.lstrip('=')} (its patches are written against those internals); "
            f"the installed vLLM is {version}. Install a supported vLLM (CPU: `pip install vllm-ptp[cpu]`), or "
            f"uninstall vllm-ptp / exclude it with VLLM_PLUGINS.")


def check_vllm_version(version: str) -> None:
    if not vllm_supported(version):
        raise UnsupportedVLLMVersion(unsupported_message(version))
