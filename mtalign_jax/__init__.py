"""mtalign_jax: multi-objective alignment (MAH-DPO, reward models, PRM-guided decoding) in JAX.

Top-level API (DESIGN.md section 4): `load_pretrained` and `logits`. Imports are lazy so that
`import mtalign_jax` does no JAX work.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load_pretrained(name_or_path, *, num_heads=1, head_init_noise=0.0, seed=0, dtype="float32"):
    """(model, params, tokenizer) for a preset name, HF directory, .gguf file or our workdir."""
    from mtalign_jax.hf.load import load_pretrained as _load

    return _load(name_or_path, num_heads=num_heads, head_init_noise=head_init_noise, seed=seed,
                 dtype=dtype)


def logits(model, params, input_ids, *, head_weights=None):
    """float32 logits [B, T, V]; with K heads and weights w, the mixed head sum_i w_i W_i
    (w normalised to sum 1); head_weights=None means head 0."""
    import jax.numpy as jnp

    hw = None if head_weights is None else jnp.asarray(head_weights, jnp.float32)
    return model.apply({"params": params}, jnp.asarray(input_ids), head_weights=hw)
