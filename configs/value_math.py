"""Math value model with hindsight relabelling (PAPER.md 2.2): an MLP head (D -> D -> 1) on a
frozen PRM trunk regresses V_t = mean_m [r_t + gamma^(n-t) z_m] (gamma 0.9) at each step end.

    python -m mtalign_jax.train --config configs/value_math.py:tiny --workdir /tmp/value_math
    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:mini --workdir workdirs/rollouts_math
    python -m mtalign_jax.train --config configs/value_math.py:mini --workdir workdirs/value_math \
        --config.data.files=workdirs/rollouts_math/labels.jsonl
    python -m mtalign_jax.train --config configs/value_math.py:paper --workdir DIR \
        --config.model.name=/path/to/Qwen2.5-Math-PRM-7B --config.data.files=labels.jsonl

Data rows: prompt, steps, step_values [, mc_success] (the rollouts command's labels.jsonl).
tiny: builds its own small SYNTHETIC targets (simulated rollouts of a planted rule, M=8).
mini: SmolLM2-135M-Instruct trunk, frozen (features cached once), on rollout targets.
Metrics: eval/mse, eval/spearman_mc (rank correlation with the Monte-Carlo success rate).
paper: frozen Qwen2.5-Math-PRM-7B-style trunk, `<extra_0>` steps, lr 5e-5, wd 0.01,
warmup 100, batch 16 x GA 2, len 2048, 3 epochs (PAPER.md 2.2).
"""
from mtalign_jax.training.task_reward import reward_config


def get_config(arg: str = "tiny"):
    c = reward_config("value", arg)
    if arg == "tiny":
        c.model.freeze_trunk = False
        c.data.max_steps = 8
        c.data.max_len = 128
        c.data.buckets = (128,)
        c.optim.lr = 1e-2
    elif arg == "mini":
        c.data.max_len = 512
        c.data.max_steps = 16
    elif arg == "paper":
        c.model.name = "qwen2.5-7b-instruct"
        c.model.freeze_trunk = True  # the official recipe: frozen PRM backbone, MLP head
        c.reward.step_token = "<extra_0>"
        c.reward.system = ("Please reason step by step, and put your final answer within "
                           "\\boxed{}.")
        c.data.max_len = 2048
        c.data.max_steps = 64
        c.optim.lr = 5e-5
        c.optim.warmup_steps = 100
        c.optim.schedule = "constant"
        c.optim.grad_accum = 2
        c.total_steps = 3000
    return c
