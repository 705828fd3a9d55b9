"""Unified PRM (PAPER.md 2.5): one binary classifier on the pooled data of all objectives, with
no conditioning (the paper's; it cannot score one dimension), or, with
`--config.data.condition=True`, the conditioned variant that sees an objective tag
` [objective: NAME]` after the prompt and can. Eval reports accuracy/AUROC per objective: run both
and compare `eval/accuracy/<objective>`.

    python -m mtalign_jax.train --config configs/unified_prm.py:tiny --workdir /tmp/unified
    python -m mtalign_jax.train --config configs/unified_prm.py:tiny --workdir /tmp/unified_cond \
        --config.data.condition=True
    python -m mtalign_jax.train --config configs/unified_prm.py:mini --workdir workdirs/unified_prm
    python -m mtalign_jax.train --config configs/unified_prm.py:paper --workdir DIR \
        --config.model.name=/path/to/Llama-3.1-8B \
        --config.data.files=math_engagement:P1,helpfulness:P2,math_accuracy:P3,sm_engagement:P4,sm_accuracy:P5

Pairs become chosen 1 / rejected 0 rows; step-labelled rows become one row per labelled step
prefix (as the paper's data processor does). tiny: SYNTHETIC rows of two objectives that give
the same marker opposite meanings. mini: SmolLM2-135M-Instruct, frozen trunk, pooled real data
(chitchat engagement pairs, Socratic Mind accuracy pairs, CHAMP step prefixes).
paper: Llama-3.1-8B-style seq-cls trunk, lr 1e-5, batch 128, len 1024, 2 epochs (PAPER.md 2.4).
"""
from mtalign_jax.training.task_reward import reward_config


def get_config(arg: str = "tiny"):
    c = reward_config("unified", arg)
    if arg == "tiny":
        c.model.freeze_trunk = False
        c.data.synthetic = 512
        c.optim.lr = 1e-2
    elif arg == "mini":
        c.data.sources = "engagement:chitchat_engagement,tutor_accuracy:socratic_mind,math:champ_fws"
        c.data.max_len = 384
        c.data.source_cap = 360
        c.data.eval_cap = 120
    elif arg == "paper":
        c.model.name = "llama-3.1-8b-instruct"
        c.data.max_len = 1024
        c.data.batch_size = 128
        c.data.eval_frac = 0.1
        c.optim.lr = 1e-5
        c.optim.warmup_steps = 130
        c.total_steps = 2600
    return c
