"""Serving our drafts bounds oneDNN's process-wide primitive cache for vLLM's engine and worker processes (the
worker's memory under load: vllm_ptp/onednn_cache.py); vLLM's own methods leave it alone and a user's value wins."""
import os

import pytest

from vllm_ptp.onednn_cache import CAPACITY, CAPACITY_VARIABLE

pytestmark = pytest.mark.engine


def build_engine_config(target, speculative_config):
    from vllm.engine.arg_utils import EngineArgs
    return EngineArgs(model=str(target), dtype="float32", enforce_eager=True, max_model_len=256,
                      speculative_config=speculative_config).create_engine_config()


@pytest.mark.parametrize("draft", ["tiny_cp", "tiny_ptp"])
def test_our_drafts_bound_the_primitive_cache(tiny_target, draft, request, monkeypatch):
    monkeypatch.delenv(CAPACITY_VARIABLE, raising=False)
    build_engine_config(tiny_target, {"model": str(request.getfixturevalue(draft)), "num_speculative_tokens": 2})
    assert os.environ[CAPACITY_VARIABLE] == str(CAPACITY)


def test_a_capacity_the_user_set_is_kept(tiny_target, tiny_cp, monkeypatch):
    monkeypatch.setenv(CAPACITY_VARIABLE, "512")
    build_engine_config(tiny_target, {"model": str(tiny_cp), "num_speculative_tokens": 2})
    assert os.environ[CAPACITY_VARIABLE] == "512"


@pytest.mark.parametrize("speculative_config", [None, {"method": "ngram", "num_speculative_tokens": 2,
                                                         "prompt_lookup_max": 3}])
def test_other_servers_leave_the_cache_alone(tiny_target, speculative_config, monkeypatch):
    monkeypatch.delenv(CAPACITY_VARIABLE, raising=False)
    build_engine_config(tiny_target, speculative_config)
    assert CAPACITY_VARIABLE not in os.environ
