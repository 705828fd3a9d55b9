"""Tutoring evaluation (PAPER.md 5.3, Socratic Mind): the tutor writes its next turn (best-of-K
turns when guided), a local student simulator replies, and the judges score the dialogue.

    python -m mtalign_jax.evaluate --config configs/eval_tutor.py:tiny --workdir /tmp/eval_tutor \
        --config.judges=accuracy:/tmp/rm_tutor_accuracy
    python -m mtalign_jax.evaluate --config configs/eval_tutor.py:mini --workdir workdirs/eval_tutor_guided \
        --config.method=guided --config.guide.prms=workdirs/rm_tutor_accuracy \
        --config.judges=accuracy:workdirs/rm_tutor_accuracy_judge

Metric: P(class 1) of each judge after the simulated student's turn (mean and fraction > 0.5).
The tutor system prompt asks for 1-2 sentences and a follow-up question (PAPER.md 5.2).
tiny: the random tiny policy and student, 4 dialogues. mini: SmolLM2-135M-Instruct as tutor
and as student, 20 dialogues, 300-token turns.
"""
from mtalign_jax.evaluate import base_config

TUTOR_SYSTEM = ("You are a programming tutor. Reply concisely in 1-2 sentences and always ask a "
                "meaningful follow-up question.")


def get_config(arg: str = "tiny"):
    c = base_config()
    c.domain = "turn"
    c.system = TUTOR_SYSTEM
    c.data.source = "socratic_mind"
    if arg == "tiny":
        c.student = "tiny"
        c.data.limit = 4
        c.decoding.max_new_tokens = 24
        c.decoding.num_candidates = 3
    elif arg == "mini":
        c.policy = c.student = "smollm2-135m-instruct"
        c.data.limit = 20
        c.decoding.max_new_tokens = 300
    else:
        raise ValueError(f"unknown variant {arg!r}: tiny, mini")
    return c
