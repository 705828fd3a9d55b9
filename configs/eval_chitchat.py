"""Engagement evaluation on chit-chat conversation prefixes (PAPER.md 5.3; dialogue domain).

    python -m mtalign_jax.evaluate --config configs/eval_chitchat.py:tiny --workdir /tmp/eval_chat \
        --config.judges=engagement:/tmp/rm_engagement
    python -m mtalign_jax.evaluate --config configs/eval_chitchat.py:mini --workdir workdirs/eval_chat_guided \
        --config.method=guided --config.guide.prms=workdirs/rm_engagement \
        --config.judges=engagement:workdirs/rm_engagement_judge

The next assistant turn of each prefix is decoded (sentence steps of 8-256 tokens when guided)
and judged: `engagement` = mean P(engaging) of a 2-class judge and `engagement>0.5`, or
sigmoid(score) for a Bradley-Terry judge. Keep the judge apart from the guide.
tiny: the random tiny policy, 4 prefixes, 32 tokens. mini: SmolLM2-135M-Instruct, 20 prefixes.
"""
from mtalign_jax.evaluate import base_config


def get_config(arg: str = "tiny"):
    c = base_config()
    c.domain = "dialogue"
    c.data.source = "chitchat"
    c.data.split = "test"
    c.data.prefix_turns = 2
    if arg == "tiny":
        c.data.limit = 4
        c.decoding.max_new_tokens = 32
        c.decoding.num_candidates = 3
    elif arg == "mini":
        c.policy = "smollm2-135m-instruct"
        c.data.limit = 20
        c.decoding.max_new_tokens = 128
    else:
        raise ValueError(f"unknown variant {arg!r}: tiny, mini")
    return c
