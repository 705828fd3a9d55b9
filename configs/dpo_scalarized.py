"""Baseline: scalarised DPO (PAPER.md 5.4): one head; every pair re-labelled by the weighted sum
of its objective scores, then DPO (mtalign_jax/training/task_scalarized.py).

    python -m mtalign_jax.train --config configs/dpo_scalarized.py:tiny --workdir /tmp/dpo_scal
    python -m mtalign_jax.train --config configs/dpo_scalarized.py:mini --workdir W \
        --config.data.files=accuracy:PATH1,engagement:PATH2 \
        --config.scalarized.weights=accuracy:0.5,engagement:0.5

Pair rows need `scores: {objective: [score_chosen, score_rejected]}` for every objective with a
non-zero weight (e.g. written by a reward-model scoring pass); a row without them is a
`FILE:LINE: field 'scores'` error. Ties keep the pair's own label (`scalarized.ties=keep`) or are
dropped (`drop`). One model per weight vector.

tiny: SYNTHETIC conflicting pairs (data.conflict) with rule scores; weights 0.7/0.3 re-label
every engagement pair towards accuracy.

mini: without --config.data.files, the pair files `make demo` writes
(demo_out/pairs_<objective>.jsonl of data.objectives; run `make demo` first). Those rows score
only their own objective (chosen_score / rejected_score), not `scores` for both: add the other
objective's scores (e.g. from a reward model) or the run stops at the first row, naming it.
"""
import ml_collections

from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    c = preference_config("scalarized", "accuracy,engagement", arg)
    c.scalarized = ml_collections.ConfigDict()
    c.scalarized.weights = "accuracy:0.5,engagement:0.5"
    c.scalarized.ties = "keep"  # or "drop"
    if arg == "tiny":
        c.data.conflict = True
        c.scalarized.weights = "accuracy:0.7,engagement:0.3"
    return c
