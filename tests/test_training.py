"""Training CP heads lowers the held-out loss, resumes from its last state, and writes a loadable checkpoint."""
import json

from vllm_ptp.models.cp_heads import load_cp_heads
from vllm_ptp.training.train_cp import CPTrainArgs, train_cp


def read_log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_training_lowers_heldout_loss(tiny_cp):
    log = read_log(tiny_cp)
    assert log[0]["step"] == 0
    assert log[-1]["eval_nll_per_token"] < log[0]["eval_nll_per_token"] - 0.3
    heads = load_cp_heads(tiny_cp)
    assert heads.config.num_heads == 3 and heads.config.rank == 4
    assert "Command:" in (tiny_cp / "README.md").read_text()


def test_training_resumes_where_it_stopped(tiny_target, tiny_cp, tmp_path):
    import shutil
    folder = tmp_path / "cp"
    shutil.copytree(tiny_cp, folder)
    steps_done = json.loads((folder / "training_state" / "train_state.json").read_text())["step"]
    train_cp(CPTrainArgs(target=str(tiny_target), data_dir=str(tiny_cp.parent / "teacher"), out=str(folder), rank=4,
                         heads=3, steps=steps_done + 20, batch_size=32, adapter_dim=16, save_every=10))
    new_records = read_log(folder)[len(read_log(tiny_cp)):]
    assert [r["step"] for r in new_records] == [steps_done + 10, steps_done + 20]


def test_train_cli_on_a_jsonl_prompt_file(tiny_target, tmp_path):
    from vllm_ptp.cli import main
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write a function number {i} that parses json"}) + "\n"
                               for i in range(12)))
    out = tmp_path / "heads"
    main(["train", "cp", "--target", str(tiny_target), "--data", str(prompts), "--out", str(out), "--rank", "2",
          "--heads", "2", "--steps", "20", "--batch-size", "16", "--max-new-tokens", "24", "--draft-vocab", "128"])
    heads = load_cp_heads(out)
    assert (heads.config.rank, heads.config.num_heads, heads.config.draft_vocab_size) == (2, 2, 128)
    assert f"--data {prompts}" in (out / "README.md").read_text()
