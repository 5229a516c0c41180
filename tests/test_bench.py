"""`vllm-ptp bench` runs end to end on the tiny target and records every field per method."""
import json

from vllm_ptp.bench.compare import parse_methods, run_bench


def test_bench_end_to_end(tiny_target, tiny_cp, tmp_path):
    out = tmp_path / "bench.json"
    run_bench(str(tiny_target), parse_methods(["none", f"cp={tiny_cp}:2"]), ["sharegpt"], [0.0], prompts=2,
              max_tokens=16, out=str(out), dtype="float32")
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["none", "cp"]
    for row in rows:
        assert set(row) >= {"tokens_per_second", "speedup", "acceptance_length", "acceptance_per_position",
                            "output_tokens", "seconds", "dataset", "temperature"}
        assert row["output_tokens"] == 32 or row["output_tokens"] > 0
    assert rows[0]["speedup"] == 1.0 and rows[0]["acceptance_length"] == 1.0
    assert len(rows[1]["acceptance_per_position"]) == 2 and rows[1]["acceptance_length"] >= 1.0
