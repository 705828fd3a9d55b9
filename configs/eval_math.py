"""Math evaluation (PAPER.md 5.3, 6.2): accuracy of a decoding method, plus judge metrics.

    python -m mtalign_jax.evaluate --config configs/eval_math.py:tiny --workdir /tmp/eval_math
    python -m mtalign_jax.evaluate --config configs/eval_math.py:tiny --workdir /tmp/eval_guided \
        --config.method=guided --config.guide.prms=/tmp/prm_math
    python -m mtalign_jax.evaluate --config configs/eval_math.py:mini --workdir workdirs/eval_math_sample
    python -m mtalign_jax.evaluate --config configs/eval_math.py:mini --workdir workdirs/eval_math_guided \
        --config.method=guided --config.guide.prms=workdirs/value_math \
        --config.judges=engagement:workdirs/rm_engagement
    python -m mtalign_jax.evaluate --table workdirs/eval_math_sample,workdirs/eval_math_guided

tiny: the random tiny policy on 4 generated arithmetic problems (exact integer grading).
mini: SmolLM2-135M-Instruct on the first 20 MATH-500 problems (math-verify), 256 new tokens,
steps at blank lines (<= 128 tokens each), K=5, T 1.0, top-k 50.
Methods: greedy, sample, best_of_n, guided, reencode, text_chunk (`--config.method`).
"""
from mtalign_jax.evaluate import base_config
from mtalign_jax.rollouts import MATH_SYSTEM


def get_config(arg: str = "tiny"):
    c = base_config()
    c.domain = "math"
    c.system = MATH_SYSTEM
    if arg == "tiny":
        c.grader = "int"
        c.data.source = "arithmetic"
        c.data.options.n = 8
        c.data.limit = 4
        c.decoding.max_new_tokens = 24
        c.decoding.max_step_tokens = 8
        c.decoding.num_candidates = 3
    elif arg == "mini":
        c.policy = "smollm2-135m-instruct"
        c.grader = "math"
        c.data.source = "math500"
        c.data.split = "test"
        c.data.limit = 20
        c.decoding.max_new_tokens = 256
        c.decoding.max_step_tokens = 128
    else:
        raise ValueError(f"unknown variant {arg!r}: tiny, mini")
    return c
