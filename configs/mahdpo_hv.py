"""MAH-DPO, hv domain: objectives helpfulness,honesty,truthfulness (head order). Human Values rows (PAPER.md 6.1): MAH-DPO Ensemble Help 0.639 / Honest 0.369 / Truth 0.248.

    python -m mtalign_jax.train --config configs/mahdpo_hv.py:tiny --workdir /tmp/mahdpo_hv
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:mini --workdir workdirs/mahdpo_hv \
        --config.data.files=helpfulness:PATH_helpfulness.jsonl,honesty:PATH_honesty.jsonl,truthfulness:PATH_truthfulness.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:paper --workdir DIR \
        --config.model.reference=SFT_DIR --config.data.files=...

tiny: the byte-level tiny model on clearly-labelled synthetic pairs (seconds on CPU).
mini: SmolLM2-135M-Instruct on pair files (make_pairs output). paper: PAPER.md section 7.1.
"""
from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    return preference_config("mahdpo", "helpfulness,honesty,truthfulness", arg, domain="hv")
