"""MAH-DPO, math domain: objectives accuracy,engagement (head order). Math table rows (PAPER.md 6.1): MAH-DPO Ensemble Acc 0.725 / Eng 0.873.

    python -m mtalign_jax.train --config configs/mahdpo_math.py:tiny --workdir /tmp/mahdpo_math
    make demo   # writes demo_out/pairs_accuracy.jsonl, demo_out/pairs_engagement.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_math.py:mini --workdir workdirs/mahdpo_math
    python -m mtalign_jax.train --config configs/mahdpo_math.py:mini --workdir workdirs/mahdpo_math \
        --config.data.files=accuracy:PATH_accuracy.jsonl,engagement:PATH_engagement.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_math.py:paper --workdir DIR \
        --config.model.reference=SFT_DIR --config.data.files=...

tiny: the byte-level tiny model on clearly-labelled synthetic pairs (seconds on CPU).
mini: SmolLM2-135M-Instruct on pair files; without --config.data.files, the demo's real pairs
(demo_out/pairs_<objective>.jsonl: exactly graded arithmetic accuracy pairs and engagement pairs
labelled by the chitchat-trained engagement RM; `make demo` first). paper: PAPER.md section 7.1.
"""
from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    return preference_config("mahdpo", "accuracy,engagement", arg, domain="math")
