import os
import tempfile
from pathlib import Path

# vLLM reads these at import: in-process engines, one thread, small KV cache, sockets and caches in a temp dir.
_scratch = tempfile.mkdtemp(prefix="vllm_ptp_tests_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_RPC_BASE_PATH", _scratch)
os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(_scratch, "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tiny_models import build_tiny_target, train_tiny_cp, train_tiny_ptp  # noqa: E402


# Built with vLLM teacher engines: a test that needs one needs an engine.
ENGINE_FIXTURES = {"tiny_cp", "tiny_cp_rank1", "tiny_ptp", "tiny_ptp_two_layers", "tiny_ptp_one_slot"}


def pytest_collection_modifyitems(config, items):
    """Marks (pyproject.toml): engine, server, slow, gpu; `bash tests/run.sh --fast` runs the tests with none."""
    for item in items:
        if ENGINE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.engine)


def pytest_collection_finish(session):
    """The interpreted Triton kernel tests (minutes of one core) start now, beside the rest of the suite."""
    if session.config.option.collectonly:
        return
    selected = [item for item in session.items if item.name in getattr(item.module, "INTERPRETED_TESTS", {})
                and not any(mark.name == "skipif" and mark.args and mark.args[0] is True
                            for mark in item.iter_markers())]
    if selected:
        module = selected[0].module
        module.start_interpreted([module.INTERPRETED_TESTS[item.name] for item in selected], Path(_scratch))


def pytest_sessionfinish(session):
    for item in session.items:
        if hasattr(item.module, "stop_interpreted"):
            item.module.stop_interpreted()
            return


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory):
    return build_tiny_target(tmp_path_factory.mktemp("tiny") / "target")


@pytest.fixture(scope="session")
def tiny_cp(tiny_target, tmp_path_factory):
    """CP heads (rank 4, 3 heads) distilled from the tiny target for a few hundred steps: they do get accepted."""
    return train_tiny_cp(tiny_target, tmp_path_factory.mktemp("tiny_cp"))


@pytest.fixture(scope="session")
def tiny_cp_rank1(tiny_target, tiny_cp, tmp_path_factory):
    """Rank-1 CP heads (independent heads: the proposer's own path), trained on tiny_cp's teacher."""
    return train_tiny_cp(tiny_target, tmp_path_factory.mktemp("tiny_cp_r1"), rank=1,
                         teacher=tiny_cp.parent / "teacher")


@pytest.fixture(scope="session")
def tiny_ptp(tiny_target, tmp_path_factory):
    """A PTP draft (4 slots, quarter_cos u-embedding) distilled from the tiny target for a few hundred steps."""
    return train_tiny_ptp(tiny_target, tmp_path_factory.mktemp("tiny_ptp"))


@pytest.fixture(scope="session")
def tiny_ptp_one_slot(tiny_target, tiny_ptp, tmp_path_factory):
    """One slot (vLLM's one-token drafting: no mask slots), briefly trained on tiny_ptp's teacher."""
    return train_tiny_ptp(tiny_target, tmp_path_factory.mktemp("ptp1"), slots=1, steps=40,
                          teacher=tiny_ptp.parent / "teacher")


@pytest.fixture(scope="session")
def tiny_ptp_two_layers(tiny_target, tiny_ptp, tmp_path_factory):
    """Two decoder layers (vLLM's EAGLE-3 layers after the first take H, not 2H): briefly trained, same teacher."""
    from vllm_ptp.training.train_ptp import PTPTrainArgs, train_ptp
    return train_ptp(PTPTrainArgs(target=str(tiny_target), data_dir=str(tiny_ptp.parent / "teacher"),
                                  out=str(tmp_path_factory.mktemp("ptp2") / "ptp"), slots=4, layers=2, steps=40,
                                  batch_size=8, window=64, anchors=16, lr=3e-3, draft_vocab_size=256, save_every=40,
                                  eval_fraction=0.1))
