"""Which engines are ours: every replacement asks this first and hands everything else to vLLM unchanged."""
from __future__ import annotations

from vllm_ptp.models.ptp_config import ARCHITECTURE

OUR_METHODS = ("cp", "ptp")


def is_ours(speculative_config) -> bool:
    """A method we serve: "cp" (its own name throughout), or a PTP draft (served as vLLM's "eagle3")."""
    return speculative_config is not None and (speculative_config.method in OUR_METHODS
                                               or serves_ptp(speculative_config))


def serves_ptp(speculative_config) -> bool:
    draft = getattr(speculative_config, "draft_model_config", None)
    return (speculative_config is not None and speculative_config.method == "eagle3" and draft is not None
            and ARCHITECTURE in (getattr(draft.hf_config, "architectures", None) or []))
