"""Baseline: DPO on the mixed data of all objectives with one head (the paper's
"Single-Head DPO", PAPER.md 5.4: Math Acc 0.725 / Eng 0.716 in table 6.1).

    python -m mtalign_jax.train --config configs/dpo_mixed.py:tiny --workdir /tmp/dpo_mixed
    python -m mtalign_jax.train --config configs/dpo_mixed.py:mini --workdir W \
        --config.data.files=accuracy:PATH1,engagement:PATH2

The pooled pairs train one head; batches are balanced, so the mean over objectives equals the
plain mean over pairs. Metrics are still reported per objective.

mini: without --config.data.files, the pair files `make demo` writes
(demo_out/pairs_<objective>.jsonl of data.objectives; run `make demo` first).
"""
from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    return preference_config("dpo", "accuracy,engagement", arg)
