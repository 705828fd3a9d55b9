"""Baseline: MODPO (Zhou et al. 2023; PAPER.md 5.4): one head trained for a target objective
with the other objectives' reward margins in the loss (mtalign_jax/training/task_modpo.py).

    python -m mtalign_jax.train --config configs/dpo_modpo.py:tiny --workdir /tmp/modpo
    # mini / paper: first train the single-objective DPO model of each other objective
    python -m mtalign_jax.train --config configs/dpo_single.py:mini --workdir workdirs/dpo_eng \
        --config.data.objectives=engagement --config.data.files=engagement:PATH_eng.jsonl
    python -m mtalign_jax.train --config configs/dpo_modpo.py:mini --workdir workdirs/modpo_acc \
        --config.data.files=accuracy:PATH_acc.jsonl \
        --config.modpo.weights=accuracy:0.5,engagement:0.5 \
        --config.modpo.margin_models=engagement:workdirs/dpo_eng

`data.objectives` names the one target objective (its pairs train the head); `modpo.weights`
gives w for the target and for every other objective; a margin comes from
`modpo.margin_models` (implicit DPO rewards, margin_beta * log-ratio vs this run's reference)
or else from each pair row's `margins`/`scores` metadata. One MODPO model per weight vector:
sweep w by rerunning with other `modpo.weights`.

tiny: SYNTHETIC accuracy pairs whose rejected answers are wrong but enthusiastic
(data.conflict), engagement margins from the synthetic rule scores (self-contained).

mini: without --config.data.files, the pair files `make demo` writes
(demo_out/pairs_<objective>.jsonl of data.objectives; run `make demo` first), with the
engagement margin from --config.modpo.margin_models (the demo rows carry no engagement `scores`).
"""
import ml_collections

from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    c = preference_config("modpo", "accuracy", arg)
    c.modpo = ml_collections.ConfigDict()
    c.modpo.weights = "accuracy:0.5,engagement:0.5"  # w_k of the target, w_j of the others
    c.modpo.margin_models = ""  # "engagement:WORKDIR,...": implicit-reward margins (primary)
    c.modpo.margin_beta = 0.1  # the beta the margin (single-objective DPO) models used
    if arg == "tiny":
        c.data.conflict = True  # rejected answers carry the engaging tail: margins are non-zero
        c.modpo.margin_beta = c.loss.beta
    return c
