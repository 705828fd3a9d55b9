"""MAH-DPO with five heads across domains (PAPER.md §6.4, the 5-head scaling study: math
accuracy/engagement + human-values helpfulness/honesty/truthfulness; the paper reports Acc 0.72 /
Eng 0.86 / Help 0.65 / Honest 0.45 / Truth 0.35, all above the base model).

    python -m mtalign_jax.train --config configs/mahdpo_five.py:tiny --workdir /tmp/mahdpo_five
    python -m mtalign_jax.train --config configs/mahdpo_five.py:mini --workdir workdirs/mahdpo_five \
        --config.data.files=accuracy:demo_out/pairs_accuracy.jsonl,engagement:demo_out/pairs_engagement.jsonl,tutor_accuracy:T.jsonl,chat_engagement:C.jsonl,champ_correctness:M.jsonl
    python -m mtalign_jax.train --config configs/mahdpo_five.py:paper --workdir DIR \
        --config.model.reference=SFT_DIR \
        --config.data.files=accuracy:A,engagement:E,helpfulness:H,honesty:O,truthfulness:T

Objectives (head order): tiny and paper: accuracy, engagement, helpfulness, honesty,
truthfulness (tiny: SYNTHETIC pairs; the human-values names follow the accuracy rule).
mini: the five preference sets available offline, one per head, across domains:
accuracy and engagement (the demo's pair files), tutor_accuracy (Socratic Mind tutoring pairs,
`socratic_mind`), chat_engagement (human-rated chit-chat pairs, `chitchat_engagement`) and
champ_correctness (CHAMP competition math: a solution with no wrong step preferred over one with
an annotated wrong step, from `champ_fws`); experiments/num_heads.py writes those files.
paper: the math domain's hyperparameters (Qwen2.5-7B-Instruct, lr 1e-6, 30 pairs a step = 32
rounded down to a multiple of 5 heads); the paper does not state the 5-head run's base model
or learning rate [inferred].
"""
from mtalign_jax.training.config_base import preference_config

PAPER_OBJECTIVES = "accuracy,engagement,helpfulness,honesty,truthfulness"
MINI_OBJECTIVES = "accuracy,engagement,tutor_accuracy,chat_engagement,champ_correctness"


def get_config(arg: str = "tiny"):
    return preference_config("mahdpo", MINI_OBJECTIVES if arg == "mini" else PAPER_OBJECTIVES,
                             arg, domain="math")
