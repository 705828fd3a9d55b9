"""Decoder trunk: tokens, positions, optional KV cache -> final-norm hidden states, cache.

The layer stack is one `nn.scan` (parameters stacked on a leading `layers` axis), optionally
rematerialised. The whole cache rides in the scan carry and each layer writes its slice with
`dynamic_update_slice`, so a donated cache is updated in place during decoding. With
`cfg.unrolled` the layers are separate blocks instead (`models/unrolled.py`): inside a decode loop
a scanned layer's weights and cache are sliced out of the stacked arrays (a copy) every token.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtalign_jax.models.kv_cache import KVCache
from mtalign_jax.models.layers import MLP, Attention, RMSNorm
from mtalign_jax.models.presets import ModelConfig


class Block(nn.Module):
    """One pre-norm decoder layer; the scan carry is (h, cache_kv or None, layer index)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, carry, positions, mask, index):
        h, kv, layer = carry
        cfg = self.cfg
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        a, kv = Attention(cfg, name="attn")(
            RMSNorm(cfg.rms_eps, cfg.dtype, cfg.param_dtype, name="attn_norm")(h),
            positions, mask, cache=kv, layer=layer, index=index)
        h = h + a
        h = h + MLP(cfg, name="mlp")(
            RMSNorm(cfg.rms_eps, cfg.dtype, cfg.param_dtype, name="mlp_norm")(h))
        return (h, kv, layer + 1), None


def attention_mask(
    key_valid: jax.Array, q_slots: jax.Array, num_slots: int
) -> jax.Array:
    """Boolean mask [B, 1, T, S]: query at slot q attends to valid slots s <= q (and itself).

    key_valid [B, S] marks real tokens; q_slots [T] are the queries' slots. A query always sees
    its own slot, so padded rows never produce an all-masked softmax.
    """
    s = jnp.arange(num_slots)
    causal = s[None, :] <= q_slots[:, None]  # [T, S]
    own = s[None, :] == q_slots[:, None]
    m = (key_valid[:, None, :] & causal[None]) | own[None]
    return m[:, None]


def default_positions(attention_mask: jax.Array, start: jax.Array) -> jax.Array:
    """Position ids [B, T] for (left-padded) rows: start[b] + running count of real tokens."""
    csum = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1
    return start[:, None] + jnp.maximum(csum, 0)


class Trunk(nn.Module):
    """Embedding, decoder layers, final RMSNorm; `embed` / `final_norm` False give a part of a
    trunk (`models/split.py`: the frozen lower layers, the top layers).

    The layers are one `nn.scan` over parameters stacked on a leading `layers` axis, or, with
    `cfg.unrolled`, L separate blocks `layers_0 .. layers_{L-1}` (`unrolled.py`: the decode
    layout, where every layer's weights and cache are their own buffers).

    Call: input_ids [B, T] int (or activations [B, T, D] when embed=False), positions [B, T]
    (default: from attention_mask and the cache), attention_mask [B, T] (1 = real token;
    default all ones), cache KVCache or None.
    Returns (hidden [B, T, D] in cfg.dtype (final-normed when final_norm), new cache or None).
    """

    cfg: ModelConfig
    embed: bool = True
    final_norm: bool = True

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        positions: Optional[jax.Array] = None,
        attention_mask: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
    ):
        cfg = self.cfg
        b, t = input_ids.shape[:2]
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        am = attention_mask.astype(bool)
        h = input_ids
        if self.embed:
            h = nn.Embed(
                cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype),
                param_dtype=jnp.dtype(cfg.param_dtype),
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(0.02), ("vocab", "embed")), name="embed")(input_ids)
        layers = _layers(cfg)
        if cache is None:
            if positions is None:
                positions = default_positions(am, jnp.zeros((b,), jnp.int32))
            mask = attention_mask_fn(am, jnp.arange(t), t)
            h, _ = layers(h, None, positions, mask, 0)
            new_cache = None
        else:
            index = cache.index
            if positions is None:
                positions = default_positions(am, cache.pos)
            valid = jax.lax.dynamic_update_slice(cache.valid, am, (0, index))
            mask = attention_mask_fn(valid, index + jnp.arange(t), cache.max_len)
            h, (k, v) = layers(h, (cache.k, cache.v), positions, mask, index)
            new_pos = jnp.where(am.any(axis=1),
                                jnp.max(jnp.where(am, positions, -1), axis=1) + 1, cache.pos)
            new_cache = KVCache(k=k, v=v, valid=valid, pos=new_pos.astype(jnp.int32),
                                index=index + t)
        if self.final_norm:
            h = RMSNorm(cfg.rms_eps, cfg.dtype, cfg.param_dtype, name="final_norm")(h)
        return h, new_cache


def _layers(cfg: ModelConfig):
    """The layer stack as a function (h, kv, positions, mask, index) -> (h, kv); kv is None, the
    stacked (k [L, ...], v [L, ...]) or, unrolled, per-layer tuples (k_0, ..), (v_0, ..)."""
    block = nn.remat(Block, prevent_cse=False) if cfg.remat else Block
    if not cfg.unrolled:
        scan = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers,
                       metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")

        def run(h, kv, positions, mask, index):
            (h, kv, _), _ = scan((h, kv, 0), positions, mask, index)
            return h, kv
        return run
    blocks = [block(cfg, name=f"layers_{i}") for i in range(cfg.n_layers)]

    def run_unrolled(h, kv, positions, mask, index):
        ks, vs = [], []
        for i, blk in enumerate(blocks):
            if kv is None:
                (h, _, _), _ = blk((h, None, 0), positions, mask, index)
                continue
            if isinstance(kv[0], (tuple, list)):  # per-layer buffers: layer i is its own array
                (h, (k, v), _), _ = blk((h, (kv[0][i][None], kv[1][i][None]), 0), positions,
                                        mask, index)
                ks.append(k[0])
                vs.append(v[0])
            else:  # one stacked cache: layer i written at a static index
                (h, kv, _), _ = blk((h, kv, i), positions, mask, index)
        if kv is None or not isinstance(kv[0], (tuple, list)):
            return h, kv
        return h, (tuple(ks), tuple(vs))
    return run_unrolled


attention_mask_fn = attention_mask
