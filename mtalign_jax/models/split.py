"""The decoder trunk cut in two: the lower L-N layers (frozen, run once) and the top N layers.

Training with a frozen lower trunk only needs the lower layers' output once per example: cache
it, then run just the top N layers (and the final norm) on the cached activations every step.
Each half is a `Trunk` with its embedding or final norm switched off, and their parameters are
slices of the full model's stacked layer parameters, so

    lower(ids) -> x [B, T, D];  upper(x) -> h [B, T, D]   equals   Trunk(ids) -> h

(tested to 1e-5 on `tiny`). Both halves also run incrementally with their own KV cache
(`init_cache(part_config(cfg, n), ...)`), which is what the demo's sampler uses: the lower
activations of every generated token come for free, and every policy that shares the frozen
lower trunk shares them.

    lo_p, up_p = split_params(params["trunk"], n_top)
    lower, upper = split_model(cfg, n_top)   # Trunks: lower final_norm=False, upper embed=False
    x, _ = lower.apply({"params": lo_p}, ids, attention_mask=m)       # [B, T, D]
    h, _ = upper.apply({"params": up_p}, x, attention_mask=m)         # [B, T, D]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtalign_jax.models.presets import ModelConfig
from mtalign_jax.models.trunk import Trunk


def part_config(cfg: ModelConfig, n_layers: int) -> ModelConfig:
    """The model config of a part holding `n_layers` layers (its KV cache has that many)."""
    if not 0 < n_layers <= cfg.n_layers:
        raise ValueError(f"a trunk part needs 1..{cfg.n_layers} layers, got {n_layers}")
    return cfg.replace(n_layers=n_layers)


def split_params(trunk_params: dict, n_top: int) -> tuple[dict, dict]:
    """(lower, upper) parameter trees of a full trunk's params.

    lower = {embed, layers[:L-n_top]}; upper = {layers[L-n_top:], final_norm}. Every leaf under
    `layers` is stacked on a leading L axis (nn.scan) and is sliced there.
    """
    n_layers = jax.tree_util.tree_leaves(trunk_params["layers"])[0].shape[0]
    if not 0 < n_top < n_layers:
        raise ValueError(f"n_top must be in 1..{n_layers - 1} for a {n_layers}-layer trunk, "
                         f"got {n_top}")
    cut = n_layers - n_top
    lower = {"embed": trunk_params["embed"],
             "layers": jax.tree_util.tree_map(lambda x: x[:cut], trunk_params["layers"])}
    upper = {"layers": jax.tree_util.tree_map(lambda x: x[cut:], trunk_params["layers"]),
             "final_norm": trunk_params["final_norm"]}
    return lower, upper


def merge_params(lower: dict, upper: dict) -> dict:
    """The full trunk's params from the two parts (inverse of `split_params`)."""
    layers = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=0),
                                    lower["layers"], upper["layers"])
    return {"embed": lower["embed"], "layers": layers, "final_norm": upper["final_norm"]}


def split_model(cfg: ModelConfig, n_top: int) -> tuple[Trunk, Trunk]:
    """(lower, upper) modules of a trunk cut below its top `n_top` layers."""
    return (Trunk(part_config(cfg, cfg.n_layers - n_top), embed=True, final_norm=False),
            Trunk(part_config(cfg, n_top), embed=False, final_norm=True))
