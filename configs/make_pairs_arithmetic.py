"""Preference pairs for the `accuracy` objective from the policy's own arithmetic solutions.

    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:tiny --workdir /tmp/mp
    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:mini \
        --workdir workdirs/pairs_arithmetic

Then train on them: `--config.data.files=accuracy:W/pairs_accuracy.jsonl,engagement:...`.
tiny: the random tiny model (byte tokenizer), 8 prompts x 4 samples, 8 new tokens (seconds;
nearly every prompt is a tie under the exact grader). mini: SmolLM2-135M-Instruct, 128
prompts x 4 samples, 48 new tokens, temperature 1.0 top-k 50 (the paper's sampling settings).
"""
from mtalign_jax.make_pairs import base_config


def get_config(arg: str = "tiny"):
    c = base_config(arg)
    tiny = arg == "tiny"
    c.objective = "accuracy"
    c.grader = "exact_int"
    c.prompt_template = "arithmetic"
    c.batch_size = 32 if tiny else 64  # sampled rows per batch
    c.tie_eps = 0.0
    c.data.source = "arithmetic"
    c.data.num_prompts = 8 if tiny else 128
    c.data.options.update({"n": 8 if tiny else 128, "seed": 0, "num_operands": 2,
                           "max_value": 20})
    return c
