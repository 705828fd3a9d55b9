"""MAH-DPO, tutor domain: objectives accuracy,engagement (head order). Socratic Mind rows (PAPER.md 6.1): MAH-DPO Ensemble Acc 0.689 / Eng 0.451.

    python -m mtalign_jax.train --config configs/mahdpo_tutor.py:tiny --workdir /tmp/mahdpo_tutor
    # mini: first the engagement pairs (engagement RM, then the policy's own scored samples)
    python -m mtalign_jax.train --config configs/rm_engagement.py:mini --workdir workdirs/rm_engagement
    python -m mtalign_jax.make_pairs --config configs/make_pairs_tutor_engagement.py:mini \
        --workdir workdirs/pairs_tutor_engagement
    python -m mtalign_jax.train --config configs/mahdpo_tutor.py:mini --workdir workdirs/mahdpo_tutor
    python -m mtalign_jax.train --config configs/mahdpo_tutor.py:mini --workdir workdirs/mahdpo_tutor \
        --config.data.files=accuracy:PATH_accuracy.jsonl,engagement:PATH_engagement.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_tutor.py:paper --workdir DIR \
        --config.model.reference=SFT_DIR --config.data.files=...

tiny: the byte-level tiny model on clearly-labelled synthetic pairs (seconds on CPU).
mini: SmolLM2-135M-Instruct. Without --config.data.files: accuracy = the 1,000 real Socratic
Mind accuracy pairs (`accuracy:source:socratic_mind`, ../shared/data), engagement = the pairs
make_pairs writes (`workdirs/pairs_tutor_engagement/pairs_engagement.jsonl`: Socratic Mind
dialogues, the policy's own tutor turns scored by the chitchat-trained engagement RM); a missing
file is an error naming the commands above. paper: PAPER.md section 7.1.
"""
from mtalign_jax.training.config_base import preference_config

ENGAGEMENT_PAIRS = "workdirs/pairs_tutor_engagement/pairs_engagement.jsonl"
MAKE_ENGAGEMENT_PAIRS = (
    "python -m mtalign_jax.train --config configs/rm_engagement.py:mini "
    "--workdir workdirs/rm_engagement && python -m mtalign_jax.make_pairs --config "
    "configs/make_pairs_tutor_engagement.py:mini --workdir workdirs/pairs_tutor_engagement")


def get_config(arg: str = "tiny"):
    c = preference_config("mahdpo", "accuracy,engagement", arg, domain="tutor")
    if arg == "mini":
        c.data.default_files = f"accuracy:source:socratic_mind,engagement:{ENGAGEMENT_PAIRS}"
        c.data.default_files_help = MAKE_ENGAGEMENT_PAIRS
    return c
