"""Teacher data at scale: prompt sources, batched state pass, memory-mapped shards, settings a folder keeps."""
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from vllm_ptp.data import load_conversations
from vllm_ptp.training.ptp_data import TeacherSettings, check_meta, load_ptp_teacher_data, states_of_shard


def test_sharegpt_turns_are_later_turns_with_their_context():
    first = load_conversations("sharegpt", "train", None)
    turns = load_conversations("sharegpt_turns", "train", None)
    assert len(turns) > 2 * len(first)
    later = [c for c in turns if len(c) >= 3]
    assert later, "no later turns"
    for conversation in later[:500]:
        roles = [m["role"] for m in conversation]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:])), roles
    assert 0 < len(load_conversations("sharegpt_turns", "heldout", None)) < len(turns) / 10


def test_stdlib_code_prompts_split_by_function():
    train, heldout = (load_conversations("stdlib", split, None) for split in ("train", "heldout"))
    assert len(train) > 1000 and len(heldout) > 100
    assert not {c[0]["content"] for c in train} & {c[0]["content"] for c in heldout}
    assert any("```python\ndef " in c[0]["content"] for c in train)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown prompt source 'sharegpt2'"):
        load_conversations("sharegpt2", "train", None)


def sequences_record(n: int = 7):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 380, (int(torch.randint(4, 30, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    completions = [torch.randint(3, 380, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist()
                   for _ in range(n)]
    return {"prompts": prompts, "completions": completions, "temperatures": [0.0, 1.0] * (n // 2) + [0.7] * (n % 2)}


def test_batched_states_are_the_one_at_a_time_states(tiny_target):
    model = AutoModelForCausalLM.from_pretrained(tiny_target, dtype=torch.float32).eval()
    record = sequences_record()
    batched = states_of_shard(model, record, [0, 1], "cpu", tokens_per_batch=128)
    single = states_of_shard(model, record, [0, 1], "cpu", tokens_per_batch=1)
    for key in ("tokens", "starts", "prompt_lens", "temperatures"):
        assert torch.equal(batched[key], single[key])
    # both bf16 on disk: padding in a batch may change float32 rounding, not more
    assert torch.allclose(batched["aux"].float(), single["aux"].float(), atol=0.02, rtol=0.02)
    assert torch.allclose(batched["final"].float(), single["final"].float(), atol=0.02, rtol=0.02)
    assert (batched["final"].float() - single["final"].float()).abs().mean() < 1e-3


def test_shards_are_read_back_one_sequence_at_a_time(tiny_target, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_target, dtype=torch.float32).eval()
    check_meta(tmp_path, TeacherSettings(target=str(tiny_target), aux_layers=[0, 1]))
    shards = [states_of_shard(model, sequences_record(n), [0, 1], "cpu", 256) for n in (5, 3)]
    for i, shard in enumerate(shards):
        save_file(shard, str(tmp_path / f"states_{i:05d}.safetensors"))
    data = load_ptp_teacher_data(tmp_path)
    assert data.num_sequences == 8
    s = 0
    for shard in shards:
        for b in range(len(shard["prompt_lens"])):
            lo, hi = int(shard["starts"][b]), int(shard["starts"][b + 1])
            aux, final = data.states.sequence(s)
            assert torch.equal(aux, shard["aux"][lo:hi]) and torch.equal(final, shard["final"][lo:hi])
            assert torch.equal(data.tokens[data.starts[s]:data.starts[s + 1]], shard["tokens"][lo:hi].long())
            s += 1
    assert data.completion_tokens == sum(len(c) for n in (5, 3) for c in sequences_record(n)["completions"])
    assert len(load_ptp_teacher_data(tmp_path, max_shards=1).prompt_lens) == 5
    # heads on the final state read single rows anywhere in the token stream, across shards
    every_final = torch.cat([shard["final"] for shard in shards])
    positions = torch.randperm(len(data.tokens), generator=torch.Generator().manual_seed(0))[:50]
    assert torch.equal(data.final_rows(positions), every_final[positions])


def test_a_teacher_folder_refuses_other_settings(tmp_path):
    check_meta(tmp_path, TeacherSettings(target="t", aux_layers=[2, 15, 27], samples_per_prompt=2))
    check_meta(tmp_path, TeacherSettings(target="t", aux_layers=[2, 15, 27], samples_per_prompt=2))  # resumes
    with pytest.raises(ValueError, match=r"meta.json: made with samples_per_prompt=2, asked for samples_per_prompt=4"):
        check_meta(tmp_path, TeacherSettings(target="t", aux_layers=[2, 15, 27], samples_per_prompt=4))


def test_state_passes_share_a_folder_by_claiming_shards(tmp_path):
    import os
    import subprocess
    import sys

    from vllm_ptp.training.ptp_data import _claim, _claim_path
    path = tmp_path / "sequences_00000.json"
    path.write_text("{}")
    assert _claim(path)
    assert not _claim(path)  # held by a live process (this one)
    _claim_path(path).unlink()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _claim_path(path).write_text(gone.stdout.strip())  # a killed state pass left its claim
    assert _claim(path) and _claim_path(path).read_text() == str(os.getpid())
    _claim_path(path).unlink()
    (tmp_path / "states_00000.safetensors").write_bytes(b"")
    assert not _claim(path) and not _claim_path(path).exists()
