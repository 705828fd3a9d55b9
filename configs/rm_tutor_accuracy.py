"""Tutoring-accuracy reward model (Socratic Mind; PAPER.md 2.3 case B / 2.4): a 2-class
classifier whose score is softmax P(class 1), as the paper's `acc_latest_filtered`.

    python -m mtalign_jax.train --config configs/rm_tutor_accuracy.py:tiny --workdir /tmp/rm_tutor
    python -m mtalign_jax.train --config configs/rm_tutor_accuracy.py:mini --workdir workdirs/rm_tutor_accuracy
    python -m mtalign_jax.train --config configs/rm_tutor_accuracy.py:paper --workdir DIR \
        --config.model.name=/path/to/Llama-3.1-8B --config.data.files=sm_accuracy.jsonl

Pairs (prompt, chosen, rejected) become two labelled rows (chosen 1, rejected 0); rows with
`response` and `label` are read as they are. Bradley-Terry instead: --config.task=rm.
tiny: the tiny model on SYNTHETIC labelled rows (planted rule). mini: SmolLM2-135M-Instruct,
frozen trunk (cached features), on 600 training rows (150 held out) of the 2,000 rows of the
1,000 real Socratic Mind accuracy pairs (`../shared/data/socratic_mind_accuracy_pairs.json`).
Metrics: eval/accuracy, eval/auroc.
paper: Llama-3.1-8B-style trunk, lr 5e-6, batch 32, len 2048 (PAPER.md 2.4).
"""
from mtalign_jax.training.task_reward import reward_config


def get_config(arg: str = "tiny"):
    c = reward_config("classifier", arg)
    if arg == "tiny":
        c.model.freeze_trunk = False
    elif arg == "mini":
        c.data.source = "socratic_mind"
        c.data.max_len = 384
        c.data.source_cap = 600
        c.data.eval_cap = 150
    elif arg == "paper":
        c.model.name = "llama-3.1-8b-instruct"
        c.data.max_len = 2048
        c.data.batch_size = 32
        c.optim.lr = 5e-6
        c.optim.warmup_steps = 30
        c.total_steps = 100
    return c
