"""vLLM general plugin entry point (group `vllm.general_plugins`), loaded in every vLLM process."""


def register() -> None:
    from vllm_ptp import vllm_integration

    vllm_integration.install()
