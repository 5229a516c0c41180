"""Training a PTP draft lowers the held-out loss, resumes where it stopped, and has its ablation modes."""
import json

import pytest
import torch
from safetensors.torch import load_file

from vllm_ptp.models.checkpoint import CheckpointError
from vllm_ptp.models.ptp_draft import load_ptp_draft
from vllm_ptp.training.train_ptp import PTPTrainArgs, train_ptp


def read_log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_training_lowers_heldout_loss(tiny_ptp):
    log = read_log(tiny_ptp)
    assert log[0]["step"] == 0
    first, last = log[0]["eval_loss_per_slot"], log[-1]["eval_loss_per_slot"]
    # 200 steps on the tiny target: the first slot learns most; later slots (further ahead) gain less, but all gain.
    assert last[0] < first[0] - 0.5 and all(b < a - 0.1 for a, b in zip(first, last)), (first, last)
    draft = load_ptp_draft(tiny_ptp)
    assert draft.config.num_slots == 4 and draft.config.u_embedding == "quarter_cos"
    assert "Command:" in (tiny_ptp / "README.md").read_text()


def test_training_resumes_where_it_stopped(tiny_target, tiny_ptp, tmp_path):
    """A run stopped (out of time at once: its state saved, a fresh process resumes) ends with exactly the weights
    and optimizer state of the run that never stopped."""
    import shutil
    steps_done = json.loads((tiny_ptp / "training_state" / "train_state.json").read_text())["step"]
    runs = {}
    for name, budgets in (("straight", [None]), ("resumed", [0.0, None])):
        folder = tmp_path / name
        shutil.copytree(tiny_ptp, folder)
        for max_hours in budgets:
            train_ptp(PTPTrainArgs(target=str(tiny_target), data_dir=str(tiny_ptp.parent / "teacher"),
                                   out=str(folder), slots=4, steps=steps_done + 10, batch_size=8, window=64,
                                   anchors=16, lr=3e-3, draft_vocab_size=256, save_every=5, eval_fraction=0.1,
                                   max_hours=max_hours))
        runs[name] = load_file(str(folder / "training_state" / "train_state.safetensors"))
        assert [r["step"] for r in read_log(folder)[len(read_log(tiny_ptp)):]] == [steps_done + 5, steps_done + 10]
    assert set(runs["straight"]) == set(runs["resumed"])
    for key, tensor in runs["straight"].items():
        torch.testing.assert_close(runs["resumed"][key], tensor, rtol=0, atol=0, msg=key)
    before = load_file(str(tiny_ptp / "training_state" / "train_state.safetensors"))
    assert not torch.equal(before["model.fc.weight"], runs["straight"]["model.fc.weight"]), "nothing was trained"


def test_a_new_run_starts_from_another_drafts_weights(tiny_target, tiny_ptp, tmp_path):
    common = dict(target=str(tiny_target), data_dir=str(tiny_ptp.parent / "teacher"), slots=4, batch_size=8,
                  window=64, anchors=16, save_every=1, eval_fraction=0.1, init_from=str(tiny_ptp), steps=1, lr=0.0)
    source = load_file(str(tiny_ptp / "model.safetensors"))
    train_ptp(PTPTrainArgs(out=str(tmp_path / "warm"), draft_vocab_size=256, **common))
    started = load_file(str(tmp_path / "warm" / "model.safetensors"))
    assert set(started) == set(source) and all(torch.equal(started[k], source[k]) for k in source)

    # Another draft vocabulary (more teacher data): the body moves over, the frozen head is this run's.
    train_ptp(PTPTrainArgs(out=str(tmp_path / "other_vocab"), draft_vocab_size=128, **common))
    moved = load_file(str(tmp_path / "other_vocab" / "model.safetensors"))
    assert moved["lm_head.weight"].shape[0] == 128 and moved["d2t"].shape == (128,)
    assert all(torch.equal(moved[k], source[k]) for k in source if k not in ("lm_head.weight", "d2t"))

    # A deeper draft grows from the shallower one and first proposes exactly what it did.
    layers = load_ptp_draft(tiny_ptp).config.num_hidden_layers
    train_ptp(PTPTrainArgs(out=str(tmp_path / "grown"), draft_vocab_size=256, layers=layers + 1, **common))
    shallow, grown = load_ptp_draft(tiny_ptp), load_ptp_draft(tmp_path / "grown")
    assert grown.config.num_hidden_layers == layers + 1
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 6, shallow.config.hidden_size, generator=g)
    tokens = torch.randint(0, 128, (2, 6), generator=g)
    positions = torch.arange(6).expand(2, 6)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 6, 6)
    shallow.embed = grown.embed = torch.randn(128, shallow.config.hidden_size, generator=g)
    torch.testing.assert_close(grown(hidden, tokens, positions, allowed), shallow(hidden, tokens, positions, allowed))
    assert grown.layers[-1].self_attn.q_proj.weight.abs().sum() > 0, "the added layer has something to learn with"

    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        train_ptp(PTPTrainArgs(out=str(tmp_path / "shallower"), draft_vocab_size=256, layers=layers,
                               **{**common, "init_from": str(tmp_path / "grown")}))


def test_train_cli_independent_and_inverse_autoregressive(tiny_target, tiny_ptp, tmp_path):
    from vllm_ptp.cli import main
    teacher = tiny_ptp.parent / "teacher"
    common = ["train", "ptp", "--target", str(tiny_target), "--teacher-dir", str(teacher), "--slots", "3",
              "--steps", "4", "--batch-size", "4", "--window", "32", "--anchors", "8", "--draft-vocab", "128",
              "--aux-layers", "0,1"]
    main(common + ["--independent", "--out", str(tmp_path / "independent")])
    main(common + ["--inverse-ar", "--u-embedding", "binary", "--loss", "kl", "--gamma", "0.8",
                   "--out", str(tmp_path / "inverse_ar")])
    independent, inverse_ar = load_ptp_draft(tmp_path / "independent"), load_ptp_draft(tmp_path / "inverse_ar")
    assert independent.config.u_embedding == "none" and not independent.config.uses_u
    assert inverse_ar.config.u_embedding == "binary" and inverse_ar.config.num_slots == 3
    assert "--inverse-ar" in (tmp_path / "inverse_ar" / "README.md").read_text()


def test_training_ships_the_best_checkpoint_by_offline_acceptance(tiny_target, tiny_ptp, tmp_path):
    teacher = tiny_ptp.parent / "teacher"
    folder = tmp_path / "ptp"
    common = dict(target=str(tiny_target), data_dir=str(teacher), out=str(folder), slots=4, batch_size=8, window=64,
                  anchors=16, lr=3e-3, draft_vocab_size=256, save_every=10, eval_fraction=0.1, eval_dir=str(teacher))
    train_ptp(PTPTrainArgs(steps=40, max_hours=0.0, **common))  # out of time at once: state saved, nothing exported
    assert json.loads((folder / "training_state" / "train_state.json").read_text())["step"] == 0
    assert not (folder / "model.safetensors").exists()
    train_ptp(PTPTrainArgs(steps=40, **common))
    evaluated = [r for r in read_log(folder) if "acceptance" in r]
    assert [r["step"] for r in evaluated] == [10, 20, 30, 40]
    assert set(evaluated[0]["acceptance"]) == {"T=0", "T=0.7", "T=1"}
    score = [sum(a["acceptance_length"] for a in r["acceptance"].values()) for r in evaluated]
    best = evaluated[score.index(max(score))]["step"]
    assert [r["step"] for r in evaluated if r.get("exported")][-1] == best
    card = (folder / "README.md").read_text()
    assert f"step {best} of 40" in card and "Offline acceptance" in card
