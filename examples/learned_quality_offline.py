"""What a better learned draft would make of the hybrid: the greedy replay of examples/hybrid_ceiling_offline.py
(T = 0, k = 3, the same held-out prompts) with the CP heads' position-1 acceptance raised.

The shipped CP rank-1 heads accept position 1 at about 0.4 on the embedded default. A better draft is modelled by
turning a share of the anchors where the heads' first token was rejected into accepted ones, chosen at random; past
position 1 a turned anchor goes on with the heads' own conditional acceptance (P(a >= j + 1 | a >= j), measured over
all anchors of the set), so only position 1 changes. For each position-1 rate the report gives CP alone and the
hybrid as served (the ngram match where one exists, else the heads; heads skipped on matched rows) against the
better of ngram and that CP alone: tokens per step, and speed in the cost model of hybrid_ceiling_offline.py (a
plain step 1, beta per verified draft token, delta per heads' forward), with beta and delta as measured by
`vllm-ptp bench` on the machine at hand.

    .venv/bin/python examples/hybrid_ceiling_offline.py            # writes runs/hybrid_ceiling/per_anchor.npz
    .venv/bin/python examples/learned_quality_offline.py --beta 0.1 --delta 0.06
"""
import argparse
import collections
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from hybrid_ceiling_offline import K, speed_ratio, walk  # noqa: E402

RATES = (None, 0.5, 0.6, 0.7, 0.8, 0.9)  # None: the shipped heads as measured


def prompts_by_set(path: pathlib.Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """per_anchor.npz -> {dataset: [{"cp": accepted, "ngram": accepted, "drafted": ngram's draft lengths,
    "span": [P, L]}, ...]}"""
    stored = np.load(path)
    grouped: dict[tuple[str, int], dict[str, np.ndarray]] = collections.defaultdict(dict)
    for key in stored.files:
        dataset, n, *name = key.split("/")
        grouped[(dataset, int(n))]["/".join(name)] = stored[key]
    out: dict[str, list] = collections.defaultdict(list)
    for (dataset, _), arrays in sorted(grouped.items()):
        out[dataset].append({"cp": arrays["accepted/cp"], "ngram": arrays["accepted/ngram"],
                             "drafted": arrays["drafted/ngram"], "span": arrays["span"]})
    return out


def continuation(accepted: np.ndarray) -> list[float]:
    """P(a >= j + 1 | a >= j) for j = 1 .. K - 1."""
    return [float((accepted >= j + 1).sum() / max((accepted >= j).sum(), 1)) for j in range(1, K)]


def raised(accepted: np.ndarray, share: float, rates: list[float], draws: np.ndarray) -> np.ndarray:
    """Turn `share` of the anchors rejected at position 1 into accepted ones, going on at the given rates. draws
    [A, K]: the anchors' own uniforms, the same for every share, so a larger share turns a superset of anchors."""
    out = accepted.copy()
    turned = (accepted == 0) & (draws[:, 0] < share)
    going = np.ones(len(accepted), dtype=bool)
    length = np.ones(len(accepted), dtype=accepted.dtype)
    for j, rate in enumerate(rates, start=1):
        going &= draws[:, j] < rate
        length += going
    out[turned] = length[turned]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--anchors", type=pathlib.Path, default=pathlib.Path("runs/hybrid_ceiling/per_anchor.npz"))
    parser.add_argument("--beta", type=float, required=True, help="a verified draft token's cost, in plain steps")
    parser.add_argument("--delta", type=float, required=True, help="the heads' forward, in plain steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for dataset, prompts in prompts_by_set(args.anchors).items():
        every_cp = np.concatenate([p["cp"] for p in prompts])
        shipped, rates = float((every_cp >= 1).mean()), continuation(every_cp)
        print(f"{dataset}: shipped heads accept position 1 at {shipped:.3f} of anchors, then "
              f"{' / '.join(f'{r:.2f}' for r in rates)} conditionally; beta {args.beta:g}, delta {args.delta:g}")
        draws = [rng.random((len(p["cp"]), K)) for p in prompts]
        for target in RATES:
            share = 0.0 if target is None else max(target - shipped, 0.0) / (1 - shipped)
            totals = collections.defaultdict(lambda: np.zeros(4))
            rate_reached = []
            for p, own_draws in zip(prompts, draws):
                cp = raised(p["cp"], share, rates, own_draws)
                rate_reached.append(cp >= 1)
                has_match = p["drafted"] > 0
                every, full = np.ones(len(cp)), np.full(len(cp), K)
                policies = {"ngram": (p["ngram"], p["drafted"], np.zeros(len(cp))), "cp": (cp, full, every),
                            "hybrid": (np.where(has_match, p["ngram"], cp), np.where(has_match, p["drafted"], K),
                                       ~has_match)}
                for name, (accepted, verified, forward) in policies.items():
                    totals[name] += walk(accepted, verified, forward, *p["span"])
            per_step = {name: t[1] / t[0] for name, t in totals.items()}
            speed = {name: speed_ratio(totals["hybrid"], totals[name], args.beta, args.delta)
                     for name in ("ngram", "cp")}
            faster = min(speed, key=speed.get)  # the smaller ratio: the faster drafter alone
            label = "shipped" if target is None else f"{float(np.concatenate(rate_reached).mean()):.2f}"
            print(f"  position 1 {label:>7s}: tokens/step ngram {per_step['ngram']:.2f}, CP {per_step['cp']:.2f}, "
                  f"hybrid {per_step['hybrid']:.2f}; hybrid over the faster alone ({faster}): speed "
                  f"{speed[faster]:.3f}x")


if __name__ == "__main__":
    main()
