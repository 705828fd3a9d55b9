"""Engagement preference pairs for the tutor domain (mahdpo_tutor's `engagement` objective).

Prompts are the real Socratic Mind tutoring dialogues (`read_source("socratic_mind")`, the
dialogue so far ending with "Assistant:"; the last `data.max_prompt_chars` characters, repeated
dialogues dropped); the policy samples N tutor turns per dialogue and the engagement reward model
(trained on the chitchat human engagement ratings) scores each one; best vs worst is a pair.

    # mini: SmolLM2-135M-Instruct, 128 dialogues x 4 samples, 48 new tokens
    python -m mtalign_jax.train --config configs/rm_engagement.py:mini --workdir workdirs/rm_engagement
    python -m mtalign_jax.make_pairs --config configs/make_pairs_tutor_engagement.py:mini \
        --workdir workdirs/pairs_tutor_engagement
    # -> workdirs/pairs_tutor_engagement/pairs_engagement.jsonl (mahdpo_tutor:mini's default)

    # tiny: the random tiny model and a tiny engagement RM (seconds)
    python -m mtalign_jax.train --config configs/rm_engagement.py:tiny --workdir /tmp/rm_engagement
    python -m mtalign_jax.make_pairs --config configs/make_pairs_tutor_engagement.py:tiny \
        --workdir /tmp/pairs_tutor_engagement

Another reward model: `--config.rm=PATH` (a reward-model workdir or HF directory).
Sampling: temperature 1.0, top-k 50 (the paper's settings); ties within `tie_eps` are dropped.
"""
from mtalign_jax.make_pairs import base_config


def get_config(arg: str = "tiny"):
    c = base_config(arg)
    tiny = arg == "tiny"
    c.objective = "engagement"
    c.grader = "rm"
    c.rm = "/tmp/rm_engagement" if tiny else "workdirs/rm_engagement"
    c.rm_batch_size = 16
    c.prompt_template = "tutor"
    c.batch_size = 16 if tiny else 32  # sampled rows per batch
    c.tie_eps = 1e-4  # RM scores are continuous: near-equal scores are ties
    c.data.source = "socratic_mind"
    c.data.num_prompts = 4 if tiny else 128
    c.data.max_prompt_chars = 160 if tiny else 1200  # keep the dialogue's end
    c.data.unique = True
    return c
