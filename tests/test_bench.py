"""`vllm-ptp bench` runs end to end on the tiny target and records every field per method."""
import json

from vllm_ptp.bench.compare import parse_methods, run_bench


def test_bench_end_to_end(tiny_target, tiny_cp, tiny_ptp, tmp_path):
    out = tmp_path / "bench.json"
    run_bench(str(tiny_target), parse_methods(["none", f"cp={tiny_cp}:2", f"ptp={tiny_ptp}:2"]), ["sharegpt"], [0.0],
              prompts=2, max_tokens=16, out=str(out), dtype="float32")
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["none", "cp", "ptp"]
    for row in rows:
        assert set(row) >= {"tokens_per_second", "speedup", "acceptance_length", "acceptance_per_position",
                            "draft_time_share", "output_tokens", "seconds", "dataset", "temperature"}
        assert row["output_tokens"] == 32 or row["output_tokens"] > 0
    assert rows[0]["speedup"] == 1.0 and rows[0]["acceptance_length"] == 1.0
    assert rows[0]["draft_time_share"] is None
    for row in rows[1:]:
        assert len(row["acceptance_per_position"]) == 2 and row["acceptance_length"] >= 1.0
        assert 0.0 < row["draft_time_share"] < 1.0
