"""The decoder trunk cut in two: the lower L-N layers (frozen, run once) and the top N layers.

Training with a frozen lower trunk only needs the lower layers' output once per example: cache
it, then run just the top N layers (and the final norm) on the cached activations every step.
The two halves reuse `trunk.Block`, `trunk.attention_mask` and `trunk.default_positions`, and
their parameters are slices of the full model's stacked layer parameters, so

    lower(ids) -> x [B, T, D];  upper(x) -> h [B, T, D]   equals   Trunk(ids) -> h

(tested to 1e-5 on `tiny`). Both halves also run incrementally with their own KV cache
(`init_cache(part_config(cfg, n), ...)`), which is what the demo's sampler uses: the lower
activations of every generated token come for free, and every policy that shares the frozen
lower trunk shares them.

    lo_p, up_p = split_params(params["trunk"], n_top)
    lower, upper = TrunkPart(part_config(cfg, L - n_top), embed=True, final_norm=False), \
                   TrunkPart(part_config(cfg, n_top), embed=False, final_norm=True)
    x, _ = lower.apply({"params": lo_p}, ids, attention_mask=m)       # [B, T, D]
    h, _ = upper.apply({"params": up_p}, x, attention_mask=m)         # [B, T, D]
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtalign_jax.models.kv_cache import KVCache
from mtalign_jax.models.layers import RMSNorm
from mtalign_jax.models.presets import ModelConfig
from mtalign_jax.models import trunk as trunk_lib
from mtalign_jax.models.trunk import Block, default_positions


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


class TrunkPart(nn.Module):
    """`cfg.n_layers` scanned layers, optionally with the embedding in front and the final norm
    behind (param names as in `Trunk`: embed, layers, final_norm).

    Call: x = input_ids [B, T] int (embed=True) or activations [B, T, D]; positions [B, T]
    (default: from attention_mask and the cache, as `Trunk`); attention_mask [B, T] (1 = real);
    cache: a KVCache with `cfg.n_layers` layers, or None.
    Returns (activations [B, T, D] (final-normed when final_norm=True), new cache or None).
    """

    cfg: ModelConfig
    embed: bool = False
    final_norm: bool = False

    @nn.compact
    def __call__(self, x, positions: Optional[jax.Array] = None,
                 attention_mask: Optional[jax.Array] = None, cache: Optional[KVCache] = None):
        cfg = self.cfg
        am = attention_mask
        b, t = x.shape[:2]
        if am is None:
            am = jnp.ones((b, t), jnp.int32)
        am = am.astype(bool)
        if self.embed:
            x = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype),
                         param_dtype=jnp.dtype(cfg.param_dtype), name="embed")(x)
        block = nn.remat(Block, prevent_cse=False) if cfg.remat else Block
        layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                         length=cfg.n_layers)(cfg, name="layers")
        if cache is None:
            if positions is None:
                positions = default_positions(am, jnp.zeros((b,), jnp.int32))
            mask = trunk_lib.attention_mask(am, jnp.arange(t), t)
            (h, _, _), _ = layers((x, None, 0), positions, mask, 0)
            new_cache = None
        else:
            index = cache.index
            if positions is None:
                positions = default_positions(am, cache.pos)
            valid = jax.lax.dynamic_update_slice(cache.valid, am, (0, index))
            mask = trunk_lib.attention_mask(valid, index + jnp.arange(t), cache.max_len)
            (h, (k, v), _), _ = layers((x, (cache.k, cache.v), 0), positions, mask, index)
            new_pos = jnp.where(am.any(axis=1),
                                jnp.max(jnp.where(am, positions, -1), axis=1) + 1, cache.pos)
            new_cache = KVCache(k=k, v=v, valid=valid, pos=new_pos.astype(jnp.int32),
                                index=index + t)
        if self.final_norm:
            h = RMSNorm(cfg.rms_eps, cfg.dtype, cfg.param_dtype, name="final_norm")(h)
        return h, new_cache


def split_model(cfg: ModelConfig, n_top: int) -> tuple[TrunkPart, TrunkPart]:
    """(lower, upper) modules of a trunk cut below its top `n_top` layers."""
    return (TrunkPart(part_config(cfg, cfg.n_layers - n_top), embed=True, final_norm=False),
            TrunkPart(part_config(cfg, n_top), embed=False, final_norm=True))
