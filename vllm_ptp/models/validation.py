"""A draft folder checked against the target at engine start-up: kind, every tensor, target sizes, k."""
from __future__ import annotations

from pathlib import Path

from vllm_ptp.models.checkpoint import CONFIG_FILE, CheckpointError, speculators_type
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import load_cp_heads
from vllm_ptp.models.ptp_config import PTP_TYPE, PTPConfig
from vllm_ptp.models.ptp_draft import load_ptp_draft


def validate_checkpoint_for_target(method: str, folder: str, target_model_config, k: int | None,
                                   longer_k_for_matches: bool = False) -> int:
    """Open the draft folder of method "ptp" or "cp"; target_model_config answers get_vocab_size(),
    get_hidden_size() and get_total_num_hidden_layers() (vLLM's ModelConfig), or is None. Returns the k to use.
    longer_k_for_matches: in the hybrid mode a draft may take a k above its heads or slots (context matches draft
    the positions beyond them)."""
    if not Path(folder).is_dir():
        raise CheckpointError(f"speculative_config.model = {folder!r}: not a directory (expected a draft checkpoint "
                              f"folder with config.json and model.safetensors)")
    found = speculators_type(folder)
    if found is not None and found != method:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: field 'speculators_model_type' is {found!r} but "
                              f"speculative_config.method is {method!r}")
    if method == PTP_TYPE:
        config = PTPConfig.from_checkpoint(folder)
        if target_model_config is not None:
            config.check_target(folder, target_model_config.get_vocab_size(), target_model_config.get_hidden_size(),
                                target_model_config.get_total_num_hidden_layers())
        load_ptp_draft(folder)  # every tensor checked now, not at the first request
        n, field = config.num_slots, "ptp.num_slots"
    else:
        config = CPConfig.from_checkpoint(folder)
        if target_model_config is not None:
            config.check_target(folder, target_model_config.get_vocab_size(), target_model_config.get_hidden_size())
        load_cp_heads(folder)
        n, field = config.num_heads, "num_heads"
    k = n if k is None else k
    if k < 1 or (k > n and not longer_k_for_matches):
        hint = (" (with \"hybrid\": \"ngram\" or \"suffix\" a larger k is taken: the context matches draft the "
                "positions beyond it)" if k > n else "")
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: num_speculative_tokens={k} but field '{field}' is {n}: "
                              f"this draft was trained to draft 1 to {n} tokens{hint}")
    return k
