"""A small load test of the server (tiny target, tiny PTP draft): no request fails, the report is complete, memory
stays bounded."""
import json

import pytest

from vllm_ptp.bench.load import LoadRun, LoadSettings, percentile, rss_at, run_load

SETTINGS = LoadSettings(requests=48, concurrency=8, max_tokens=16, warmup=8, rss_growth_mb=300,
                        prompt_sources="humaneval", prompts=16, startup_timeout=300)
# the tiny target's context is 1024 tokens; float32 as the other server tests
VLLM_ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "1024"]


@pytest.mark.server
def test_load_without_and_with_a_ptp_draft(tiny_target, tiny_ptp, tmp_path):
    report = run_load(str(tiny_target), {"model": str(tiny_ptp)}, SETTINGS, tmp_path, VLLM_ARGS)

    assert report == json.loads((tmp_path / "load.json").read_text())
    assert report["problems"] == []
    assert [run["name"] for run in report["runs"]] == ["none", tiny_ptp.name]
    expected_fields = set(LoadRun.__dataclass_fields__) | {"acceptance_length"}
    for run in report["runs"]:
        assert set(run) == expected_fields
        assert run["requests"] == SETTINGS.requests
        assert run["failures"] == 0, run["failure_examples"]
        assert 0 < run["latency_p50_s"] <= run["latency_p99_s"] <= run["latency_max_s"]
        assert 0 < run["ttft_p50_s"] <= run["ttft_p99_s"] <= run["latency_max_s"]
        assert 0 < run["tpot_p50_s"] <= run["tpot_p99_s"] and 0 < run["itl_p50_s"] <= run["itl_p99_s"]
        assert run["requests_per_second"] > 0 and run["output_tokens"] > 0
        assert 0 < run["rss_after_warmup_mb"] <= run["rss_peak_mb"]
        assert run["rss_growth_mb"] <= SETTINGS.rss_growth_mb
        assert run["rss_timeline"] and run["rss_timeline"][0][0] == 0.0
        by_process = run["rss_by_process_end_mb"]
        assert any(name.startswith("VLLM::EngineCor") for name in by_process), by_process  # the engine's process
        assert sum(by_process.values()) == pytest.approx(run["rss_end_mb"], abs=50)
    none, draft = report["runs"]
    assert none["spec_drafts"] == 0 and none["acceptance_length"] is None
    assert draft["spec_drafts"] > 0 and len(draft["spec_accepted_per_position"]) == 4
    table = (tmp_path / "load.md").read_text()
    assert f"| | none | {tiny_ptp.name} |" in table and "latency p99 (s)" in table and "TPOT p50 / p99 (ms)" in table


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


def test_rss_at_takes_the_last_sample_not_after():
    timeline = [[0.0, 100.0], [5.0, 120.0], [10.0, 150.0]]
    assert rss_at(timeline, 7.5, default=0.0) == 120.0
    assert rss_at(timeline, 10.0, default=0.0) == 150.0
    assert rss_at([], 3.0, default=99.0) == 99.0
