"""Preference pairs for the `accuracy` objective from the policy's own arithmetic solutions.

    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:tiny --workdir /tmp/mp
    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:mini \
        --workdir workdirs/pairs_arithmetic

Then train on them: `--config.data.files=accuracy:W/pairs_accuracy.jsonl,engagement:...`.
tiny: the random tiny model (byte tokenizer), 8 prompts x 4 samples, 8 new tokens (seconds;
nearly every prompt is a tie under the exact grader). mini: SmolLM2-135M-Instruct, 128
prompts x 4 samples, 48 new tokens, temperature 1.0 top-k 50 (the paper's sampling settings).
"""
import ml_collections


def get_config(arg: str = "tiny"):
    if arg not in ("tiny", "mini"):
        raise ValueError(f"unknown variant {arg!r} (tiny, mini)")
    tiny = arg == "tiny"
    c = ml_collections.ConfigDict()
    c.model = "tiny" if tiny else "smollm2-135m-instruct"
    c.dtype = "float32"
    c.objective = "accuracy"
    c.grader = "exact_int"
    c.prompt_template = "arithmetic"
    c.samples_per_prompt = 4
    c.max_new_tokens = 8 if tiny else 48
    c.temperature = 1.0
    c.top_k = 50
    c.batch_size = 32 if tiny else 64  # sampled rows per batch
    c.tie_eps = 0.0
    c.seed = 0
    c.data = ml_collections.ConfigDict()
    c.data.source = "arithmetic"
    c.data.num_prompts = 8 if tiny else 128
    c.data.options = ml_collections.ConfigDict(
        {"n": 8 if tiny else 128, "seed": 0, "num_operands": 2, "max_value": 20})
    return c
