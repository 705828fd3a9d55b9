"""Baseline: single-objective DPO (one head trained on one objective's pairs).

    python -m mtalign_jax.train --config configs/dpo_single.py:tiny --workdir /tmp/dpo_acc
    python -m mtalign_jax.train --config configs/dpo_single.py:mini --workdir W \
        --config.data.objectives=engagement --config.data.files=engagement:PATH

The per-objective DPO models are also the ingredients of DPO soups. PAPER.md 5.4 / 6.1.

mini: without --config.data.files, the pair files `make demo` writes
(demo_out/pairs_<objective>.jsonl of data.objectives; run `make demo` first).
"""
from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    c = preference_config("dpo", "accuracy", arg)
    return c
