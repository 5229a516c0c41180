"""Run under torchrun (or alone): train Medusa heads for a few steps on the given teacher folder.

usage: distributed_run.py TARGET TEACHER_DIR OUT
"""
import sys

from vllm_ptp.training import distributed
from vllm_ptp.training.train_medusa import MedusaTrainArgs, train_medusa

rows = []
share = distributed.share


def counting_share(indices):
    mine = share(indices)
    rows.append(len(mine))
    return mine


if __name__ == "__main__":
    target, teacher, out = sys.argv[1:4]
    distributed.start_from_environment("cpu")
    distributed.share = counting_share
    train_medusa(MedusaTrainArgs(target=target, data_dir=teacher, out=out, heads=3, steps=4, batch_size=16, lr=1e-2,
                                 draft_vocab_size=256, save_every=2, eval_fraction=0.1, seed=0))
    print(f"ROWS {distributed.rank_and_size()[0]} {sum(rows)}")
