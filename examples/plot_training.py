"""Held-out acceptance length against training anchors seen, per draft and temperature, from the drafts' training
logs (`train_log.jsonl`, written by `vllm-ptp train ptp|peagle --eval-dir ...`): the data-scaling curve.

usage: python examples/plot_training.py DRAFT_DIR[@ANCHORS]... --out curve.png
(@ANCHORS: a run warm-started from a draft that had seen that many anchors, plotted after it)
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(folder: Path, offset: int = 0) -> dict[str, tuple[list[int], list[float]]]:
    """{"T=0": (anchors seen, acceptance length), ...} from the evaluated records of a training log."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for line in (folder / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name, acceptance in record.get("acceptance", {}).items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(offset + record["anchors_seen"])
            ys.append(acceptance["acceptance_length"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("drafts", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, temperature in zip(axes, ("T=0", "T=1")):
        for spec in a.drafts:
            folder, _, offset = spec.partition("@")
            xs, ys = curve(Path(folder), int(offset or 0)).get(temperature, ([], []))
            ax.plot(xs, ys, marker="o", label=Path(folder).name)
        ax.set_title(f"held-out, {temperature}")
        ax.set_xlabel("training anchors seen (draft steps of k tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("offline acceptance length (k = 4)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
