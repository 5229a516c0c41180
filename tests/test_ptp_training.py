"""Training a PTP draft lowers the held-out loss, resumes where it stopped, and has its ablation modes."""
import json

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
    import shutil
    folder = tmp_path / "ptp"
    shutil.copytree(tiny_ptp, folder)
    steps_done = json.loads((folder / "training_state" / "train_state.json").read_text())["step"]
    train_ptp(PTPTrainArgs(target=str(tiny_target), data_dir=str(tiny_ptp.parent / "teacher"), out=str(folder),
                           slots=4, steps=steps_done + 10, batch_size=8, window=64, anchors=16, lr=3e-3,
                           draft_vocab_size=256, save_every=5, eval_fraction=0.1))
    new_records = read_log(folder)[len(read_log(tiny_ptp)):]
    assert [r["step"] for r in new_records] == [steps_done + 5, steps_done + 10]


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
