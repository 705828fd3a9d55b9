"""Monte-Carlo rollouts from every step prefix (PAPER.md 2.2-2.3): step labels and hindsight
value targets for configs/value_math.py and configs/prm_math.py.

    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:tiny --workdir /tmp/rollouts
    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:mini --workdir workdirs/rollouts_math
    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:paper --workdir DIR \
        --config.policy=/path/to/sft_policy

Case A (math engagement) labels from a calibrated RM judge:
    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:mini --workdir W \
        --config.mode=case_a --config.judge=workdirs/rm_engagement \
        --config.judge_calibration=human_ratings.jsonl --config.objective=engagement

tiny: the random tiny policy on generated arithmetic problems (seconds; every z is 0).
mini: SmolLM2-135M-Instruct on 24 GSM8K reference step solutions, M=4, graded by the last
integer (or boxed integer) of prefix + rollout.
paper: the SFT policy writes its own MATH-500 solutions, M=8, 1024 new tokens per rollout.
"""
import ml_collections

from mtalign_jax.rollouts import MATH_SYSTEM


def get_config(arg: str = "tiny"):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.policy = "tiny"
    c.dtype = "float32"
    c.system = MATH_SYSTEM
    c.solutions = "given"  # or "generate": the policy writes the solutions first (greedy)
    c.mode = "verifiable"  # "verifiable" | "case_a" | "case_b"
    c.grader = "math"  # "math" (math-verify on \boxed) | "int" (exact integer)
    c.step_reward = "mc_hard"  # r_t: "mc_hard" | "labels" | "zero" | "prm"
    c.prm = ""  # step PRM (workdir / HF dir) when step_reward="prm"
    c.gamma = 0.9
    c.judge = ""  # RM workdir for case_a / case_b
    c.judge_calibration = ""  # JSONL prompt, response, rating (held-out human ratings)
    c.human_threshold = 6.0
    c.objective = "engagement"
    c.data = ml_collections.ConfigDict()
    c.data.files = ""  # JSONL: prompt, answer, steps or response [, id, step_labels]
    c.data.source = "arithmetic"
    c.data.split = "all"
    c.data.limit = 4
    c.rollouts = ml_collections.ConfigDict()
    c.rollouts.m = 4
    c.rollouts.max_new_tokens = 16
    c.rollouts.temperature = 1.0
    c.rollouts.top_k = 50
    c.rollouts.top_p = 1.0
    c.rollouts.batch_prefixes = 8
    c.rollouts.solution_tokens = 256
    c.rollouts.keep_text = False
    if arg == "tiny":
        c.grader = "int"
    elif arg == "mini":
        c.policy = "smollm2-135m-instruct"
        c.data.source = "gsm8k"
        c.grader = "int"  # GSM8K answers are integers; the reference steps have no \boxed{}
        c.data.limit = 24
        c.rollouts.max_new_tokens = 128
        c.rollouts.batch_prefixes = 16
    elif arg == "paper":
        c.policy = "qwen2.5-7b-instruct"
        c.dtype = "bfloat16"
        c.solutions = "generate"
        c.data.source = "math500"
        c.data.limit = 0
        c.rollouts.m = 8
        c.rollouts.max_new_tokens = 1024
        c.rollouts.solution_tokens = 1024
        c.rollouts.batch_prefixes = 16
    else:
        raise ValueError(f"unknown variant {arg!r}: tiny, mini, paper")
    return c
