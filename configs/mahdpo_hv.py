"""MAH-DPO, hv domain: objectives helpfulness,honesty,truthfulness (head order). Human Values rows (PAPER.md 6.1): MAH-DPO Ensemble Help 0.639 / Honest 0.369 / Truth 0.248.

    python -m mtalign_jax.train --config configs/mahdpo_hv.py:tiny --workdir /tmp/mahdpo_hv
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:mini --workdir workdirs/mahdpo_hv
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:mini --workdir workdirs/mahdpo_hv \
        --config.data.source_path=/path/to/ultrafeedback.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:mini --workdir workdirs/mahdpo_hv \
        --config.data.files=helpfulness:PATH_helpfulness.jsonl,honesty:PATH_honesty.jsonl,truthfulness:PATH_truthfulness.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_hv.py:paper --workdir DIR \
        --config.model.reference=SFT_DIR --config.data.files=...

tiny: the byte-level tiny model on clearly-labelled synthetic pairs (seconds on CPU).
mini: SmolLM2-135M-Instruct on UltraFeedback best-vs-worst pairs per dimension, read through the
`ultrafeedback` source (`data.source`) from `data.source_path`. Its default is a small SYNTHETIC
fixture in UltraFeedback's line format (mtalign_jax/data/fixtures/ultrafeedback_synthetic.jsonl,
60 made-up prompts: it only shows the pipeline runs offline); UltraFeedback is not shipped, so
point `--config.data.source_path` at the real JSONL for real numbers, or pass pair files.
paper: PAPER.md section 7.1.
"""
from mtalign_jax.data.fixtures import ULTRAFEEDBACK
from mtalign_jax.training.config_base import preference_config


def get_config(arg: str = "tiny"):
    c = preference_config("mahdpo", "helpfulness,honesty,truthfulness", arg, domain="hv")
    if arg == "mini":
        c.data.source = "ultrafeedback"
        c.data.source_path = ULTRAFEEDBACK  # SYNTHETIC fixture; the real file: override this
    return c
