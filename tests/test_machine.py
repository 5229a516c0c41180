"""dtype "auto" runs float32 on a CPU that emulates bf16 (where no draft can pay) and bf16 everywhere else."""
import pytest
import torch

from vllm_ptp import machine


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU without CUDA whose /proc/cpuinfo has the given fields."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)

    def set_fields(**fields):
        monkeypatch.setattr(machine, "_cpuinfo", lambda: {k.replace("_", " "): v for k, v in fields.items()})
    return set_fields


def test_auto_picks_float32_where_bf16_is_emulated(cpu):
    cpu(model_name="AMD EPYC", flags="fpu sse2 avx avx2 fma")
    assert machine.native_bf16() is False
    assert machine.resolve_dtype("auto") == "float32"
    assert machine.resolve_dtype("bfloat16") == "bfloat16"  # an explicit dtype is kept, with a warning
    assert "AMD EPYC" in machine.bf16_warning("bfloat16") and "float32" in machine.bf16_warning(torch.bfloat16)
    assert machine.bf16_warning("float32") is None


@pytest.mark.parametrize("fields", [{"flags": "avx2 avx512f avx512_bf16"}, {"flags": "avx2 amx_tile amx_bf16"},
                                    {"Features": "fp asimd bf16 i8mm"}])
def test_auto_picks_bf16_where_it_is_native(cpu, fields):
    cpu(**fields)
    assert machine.native_bf16() is True
    assert machine.resolve_dtype("auto") == "bfloat16" and machine.bf16_warning("bfloat16") is None


def test_unknown_cpu_keeps_bf16(cpu):
    cpu()  # no /proc/cpuinfo: vLLM's own default stands
    assert machine.native_bf16() is None and machine.resolve_dtype("auto") == "bfloat16"
    assert machine.bf16_warning("bfloat16") is None


def test_describe_names_this_machine():
    info = machine.describe()
    assert info["processor"] and info["cpus"] >= 1 and info["native_bf16"] in (True, False, None)
