"""In-process engines for tests: float32 target, eager, small context (greedy equality needs float32)."""
from vllm_ptp.bench.measure import EngineRun
from vllm_ptp.bench.measure import generate as _generate

__all__ = ["EngineRun", "engine_config", "generate"]


def generate(target, prompts, params, speculative_config=None, **kwargs) -> EngineRun:
    kwargs = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512, **kwargs}
    return _generate(target, prompts, params, speculative_config, **kwargs)


def engine_config(target, speculative_config: dict):
    """Only vLLM's configuration step (where our settings are checked), no engine."""
    from vllm.engine.arg_utils import EngineArgs
    return EngineArgs(model=str(target), dtype="float32", enforce_eager=True, max_model_len=256,
                      speculative_config=speculative_config).create_engine_config()


def draft_with_target_states(target, draft_dir, prompt: str, output_ids: list[int]):
    """(plain-torch draft with the target's embedding, prompt + output token ids, the target's float32 auxiliary
    states at every position [T, n_aux * H]): what vLLM handed an EAGLE-3-layout draft during that run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vllm_ptp.models.ptp_draft import load_ptp_draft
    sequence = torch.tensor(AutoTokenizer.from_pretrained(target)(prompt)["input_ids"] + list(output_ids))
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    draft = load_ptp_draft(draft_dir)
    draft.embed = model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        hidden = model.model(sequence[None], output_hidden_states=True).hidden_states
    return draft, sequence, torch.cat([hidden[i][0] for i in draft.config.aux_layer_ids], dim=-1)
