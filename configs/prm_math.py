"""Binary step-level math PRM (PAPER.md 2.2, 2.6): BCE per step, the head read at each step's
end (the shared segmentation, or an explicit step token such as Qwen's `<extra_0>`).

    python -m mtalign_jax.train --config configs/prm_math.py:tiny --workdir /tmp/prm_math
    python -m mtalign_jax.train --config configs/prm_math.py:mini --workdir workdirs/prm_math
    python -m mtalign_jax.train --config configs/prm_math.py:paper --workdir DIR \
        --config.model.name=/path/to/Qwen2.5-Math-PRM-7B --config.data.files=prm800k.jsonl

Data rows: prompt, steps (or response, segmented), step_labels (1 good, 0 bad, soft labels in
[0, 1], -100 unlabelled); `labels.jsonl` of `python -m mtalign_jax.rollouts` works as is.
tiny: SYNTHETIC step prefixes (a prefix is bad from its first marked step on).
mini: SmolLM2-135M-Instruct, frozen trunk (cached features), on CHAMP's 540 hand-annotated
first-wrong-step labels (`champ_fws`). Metrics: eval/step_auroc, eval/first_error_accuracy.
paper: Qwen2.5-Math-PRM-7B-style trunk with `<extra_0>` step tokens and the PRM system prompt,
lr 5e-5, AdamW wd 0.01, warmup 100, batch 16 x GA 2, len 2048 (PAPER.md 2.4).
"""
from mtalign_jax.training.task_reward import reward_config


def get_config(arg: str = "tiny"):
    c = reward_config("prm", arg)
    if arg == "tiny":
        c.model.freeze_trunk = False
        c.data.max_steps = 8
        c.data.max_len = 128
        c.data.buckets = (128,)
    elif arg == "mini":
        c.data.source = "champ_fws"
        c.data.max_len = 512
        c.data.max_steps = 32
        c.data.eval_frac = 0.2
    elif arg == "paper":
        c.model.name = "qwen2.5-7b-instruct"
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
