"""The decode layout: a trunk's layers as L separate parameter trees and L separate caches.

Training scans the layers over parameters stacked on a leading L axis (`trunk.Trunk`, one
compiled block). In a decode loop that costs a copy: every token, every layer's weights and its
cache slice are cut out of the stacked arrays (on CPU ~20% of a decode step at batch 64, more at
small batch, where a step is memory-bound). Unrolled, every layer is its own block with its own
buffers, read in place:

    model_u, params_u = unrolled(model, params)     # once, outside jit (copies the weights once)
    cache = kv_cache.per_layer(cache)                # inside the jitted loop, before it
    logits, cache = model_u.apply({"params": params_u}, tok, cache=cache)   # each step
    cache = kv_cache.stacked(cache)                  # after the loop

`model` is a `CausalLM` (params {"trunk", "heads"}) or a `Trunk` / trunk part (its params).
The outputs equal the scanned model's (tested). The price is compile time: the loop body holds L
blocks instead of one (a few seconds for SmolLM2's 30 layers).
"""
from __future__ import annotations

import jax

from mtalign_jax.models import kv_cache
from mtalign_jax.models.model import CausalLM
from mtalign_jax.models.trunk import Trunk


def unroll_params(trunk_params: dict) -> dict:
    """{embed?, layers: stacked [L, ...], final_norm?} -> {embed?, layers_0 .. layers_{L-1},
    final_norm?}; an already unrolled tree is returned as is."""
    if "layers" not in trunk_params:
        return trunk_params
    out = {k: v for k, v in trunk_params.items() if k != "layers"}
    n = jax.tree_util.tree_leaves(trunk_params["layers"])[0].shape[0]
    for i in range(n):
        out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x: x[i], trunk_params["layers"])
    return out


_unroll = jax.jit(unroll_params)  # one dispatch; every layer's leaves become their own buffers


def unrolled(model, params):
    """(the model with `cfg.unrolled`, its params in that layout); see the module docstring.
    A model that is already unrolled is returned as is."""
    if not isinstance(model, (CausalLM, Trunk)):
        raise TypeError(f"unrolled: expected a CausalLM or a Trunk, got {type(model).__name__}")
    if model.cfg.unrolled:
        return model, params
    cfg = model.cfg.replace(unrolled=True)
    if isinstance(model, CausalLM):
        return model.clone(cfg=cfg), dict(params, trunk=_unroll(params["trunk"]))
    return model.clone(cfg=cfg), _unroll(params)


def loop_cache(model, cache):
    """The cache a decode loop of `model` carries: per-layer when the model is unrolled."""
    return kv_cache.per_layer(cache) if model.cfg.unrolled else cache
