"""`vllm-ptp bench` runs end to end on the tiny target and records every field per method and setting."""
import json

import pytest

from vllm_ptp.bench.compare import BenchConfig, parse_methods, run_bench

FIELDS = {"method", "dataset", "temperature", "batch_size", "tokens_per_second", "tokens_per_second_runs", "speedup",
          "acceptance_length", "tokens_per_step", "acceptance_per_position", "draft_time_share", "greedy_identical",
          "output_tokens", "seconds"}


def test_bench_end_to_end(tiny_target, tiny_cp, tiny_ptp, tmp_path):
    config = BenchConfig(methods=["none", f"cp={tiny_cp}:2", f"ptp={tiny_ptp}:2"], datasets=["sharegpt"],
                         temperatures=[0.0], batch_sizes=[1, 2], prompts=2, max_tokens=16, repeats=2,
                         identity_tokens=12, dtype="float32")
    run_bench(str(tiny_target), config, out=tmp_path, progress=False)
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["config"]["repeats"] == 2 and report["wall_seconds"] > 0 and report["machine"]["cpus"]
    assert report["dtype"] == "float32" and report["machine"]["native_bf16"] in (True, False, None)
    rows = report["rows"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [
        ("none", 1), ("cp", 1), ("ptp", 1), ("none", 2), ("cp", 2), ("ptp", 2)]
    for row in rows:
        assert set(row) == FIELDS
        assert len(row["tokens_per_second_runs"]) == 2 and row["output_tokens"] > 0
    for row in rows[0], rows[3]:
        assert row["speedup"] == 1.0 and row["acceptance_length"] == row["tokens_per_step"] == 1.0
        assert row["draft_time_share"] is None and row["greedy_identical"] is None
    for row in rows[1:3] + rows[4:]:
        assert len(row["acceptance_per_position"]) == 2 and row["acceptance_length"] > 1.0
        assert 1.0 < row["tokens_per_step"] <= row["acceptance_length"]  # our drafts draft at every step
        assert 0.0 < row["draft_time_share"] < 1.0
        assert row["greedy_identical"] is True  # float32 greedy: lossless
    assert "| sharegpt | 0 | 2 | ptp |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_config_errors(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"methods": ["none"], "batch_size": [1]}))
    with pytest.raises(ValueError, match=r"bench.json: unknown field\(s\) \['batch_size'\]"):
        BenchConfig.from_file(bad)
    bad.write_text(json.dumps({"methods": ["none"], "batch_sizes": [0]}))
    with pytest.raises(ValueError, match="bench.json: batch_sizes must be integers >= 1"):
        BenchConfig.from_file(bad)
    bad.write_text(json.dumps({"methods": ["none"], "dtype": "bf16"}))
    with pytest.raises(ValueError, match=r"bench.json: dtype must be one of \['auto', 'bfloat16', 'float32', 'float16'\], got 'bf16'"):
        BenchConfig.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read a JSON bench config"):
        BenchConfig.from_file(bad)
    with pytest.raises(ValueError, match="cannot read .*config.json"):
        parse_methods([f"x={tmp_path}"])
    with pytest.raises(ValueError, match="expected 'none'"):
        parse_methods(["eagle"])
    with pytest.raises(ValueError, match="unique"):
        parse_methods(["none", "none"])
    with pytest.raises(ValueError, match="'@C' needs a number"):
        parse_methods([f"x={tmp_path}@0.5.5"])
    with pytest.raises(ValueError, match="cannot read .*ptp@v2/config.json"):
        parse_methods([f"x={tmp_path}/ptp@v2:3"])  # an '@' in a folder's name is the folder's


def test_bench_method_with_hybrid_and_confidence(tiny_ptp, tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"methods": ["p=../d:4+ngram@0.05"]}))
    config = BenchConfig.from_file(tmp_path / "bench.json")
    assert config.methods == [f"p={tmp_path / '../d'}:4+ngram@0.05"]
    method, = parse_methods([f"p={tiny_ptp}:4+ngram@0.05"])
    assert method.speculative_config == {"model": str(tiny_ptp), "hybrid": "ngram", "prompt_lookup_max": 4,
                                         "prompt_lookup_min": 2, "min_draft_confidence": 0.05,
                                         "num_speculative_tokens": 4}
    method, = parse_methods([f"p={tiny_ptp}@0.2"])
    assert method.speculative_config == {"model": str(tiny_ptp), "min_draft_confidence": 0.2}
    method, = parse_methods([f"p={tiny_ptp}:3+ngram@auto"])
    assert method.speculative_config["min_draft_confidence"] == "auto" and method.speculative_config["hybrid"]
    suffix, hybrid = parse_methods(["suffix:4", f"p={tiny_ptp}:3+suffix@auto"])
    assert (suffix.name, suffix.speculative_config) == ("suffix k=4", {"method": "suffix", "num_speculative_tokens": 4})
    assert hybrid.speculative_config == {"model": str(tiny_ptp), "hybrid": "suffix", "min_draft_confidence": "auto",
                                         "num_speculative_tokens": 3}


def test_bench_method_as_a_speculative_config(tmp_path):
    spec = {"model": "d", "hybrid": "ngram", "hybrid_draft_max_batch_size": 4}
    (tmp_path / "bench.json").write_text(json.dumps({"methods": ["none", {"name": "h", "speculative_config": spec}]}))
    config = BenchConfig.from_file(tmp_path / "bench.json")
    _, method = parse_methods(config.methods)
    assert (method.name, method.speculative_config) == ("h", {**spec, "model": str(tmp_path / "d")})
    with pytest.raises(ValueError, match="expected {\"name\": NAME, \"speculative_config\""):
        parse_methods([{"name": "h", "speculative_config": spec, "k": 3}])
    for bad in ({"name": "none", "speculative_config": spec}, {"name": "h", "speculative_config": {}}):
        with pytest.raises(ValueError, match="expected {\"name\": NAME"):
            parse_methods([bad])


@pytest.mark.engine
def test_cpu_sampler_fixes_are_ours_unless_the_engine_asks(tiny_target, monkeypatch):
    """vLLM's own methods are verified by vLLM's CPU rejection sampler as shipped, unless their engine asks for the
    fixes (EngineSettings.fix_cpu_sampler_for_all); each engine's choice holds during its own verification."""
    from vllm import SamplingParams
    from vllm.v1.sample import rejection_sampler

    from vllm_ptp.bench.measure import engine, run_prompts
    from vllm_ptp.vllm_integration import cpu_sampler_fixes
    from vllm.plugins import load_general_plugins
    load_general_plugins()  # the plugin's patches first, so that the spy sees what vLLM calls
    seen = []
    expand = rejection_sampler.expand_batch_to_tokens

    def spying(*args, **kwargs):
        seen.append(cpu_sampler_fixes.active())
        return expand(*args, **kwargs)

    monkeypatch.setattr(rejection_sampler, "expand_batch_to_tokens", spying)
    own = {"method": "draft_model", "model": str(tiny_target), "num_speculative_tokens": 2}
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=0)
    for asked in (False, True, False):
        with engine(str(tiny_target), own, fix_cpu_sampler_for_all=asked, dtype="float32", enforce_eager=True,
                    max_model_len=512) as live:
            seen.clear()  # not the engine's warm-up, which runs outside the runner's sampling step
            run_prompts(live.llm, ["def f(x): return x"], params)
        assert seen and set(seen) == {asked}


def test_each_setting_gets_prompts_of_its_own(tiny_target, tmp_path):
    """An engine runs every setting in turn; vLLM's suffix decoding remembers earlier outputs, so a setting that
    repeated another's prompts would meet their answers again."""
    from vllm_ptp.bench.compare import setting_prompts
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(12)))
    config = BenchConfig(datasets=[str(prompts)], temperatures=[0.0, 1.0], batch_sizes=[1, 4], prompts=3)
    texts = setting_prompts(str(tiny_target), config)
    assert len(texts) == 4 and all(len(t) == 3 for t in texts.values())
    assert len({p for t in texts.values() for p in t}) == 12
    with pytest.raises(ValueError, match="has 12 held-out prompts that leave room for max_tokens; each of its 4 "
                                         "settings .* takes 4 of its own"):
        setting_prompts(str(tiny_target), BenchConfig(datasets=[str(prompts)], temperatures=[0.0, 1.0],
                                                      batch_sizes=[1, 4], prompts=4))
