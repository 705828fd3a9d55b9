"""Decoder trunk: tokens, positions, optional KV cache -> final-norm hidden states, cache.

The layer stack is one `nn.scan` (parameters stacked on a leading `layers` axis), optionally
rematerialised. The whole cache rides in the scan carry and each layer writes its slice with
`dynamic_update_slice`, so a donated cache is updated in place during decoding.
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
    """Embedding, scanned layers, final RMSNorm.

    Call: input_ids [B, T] int, positions [B, T] (default: from attention_mask and the cache),
    attention_mask [B, T] (1 = real token; default all ones), cache KVCache or None.
    Returns (hidden [B, T, D] in cfg.dtype, new cache or None).
    """

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")))
        block = Block
        if cfg.remat:
            block = nn.remat(Block, prevent_cse=False, static_argnums=())
        self.layers = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.n_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers")
        self.final_norm = RMSNorm(cfg.rms_eps, cfg.dtype, cfg.param_dtype, name="final_norm")

    def __call__(
        self,
        input_ids: jax.Array,
        positions: Optional[jax.Array] = None,
        attention_mask: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
    ):
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        am = attention_mask.astype(bool)
        h = self.embed(input_ids)
        if cache is None:
            if positions is None:
                positions = default_positions(am, jnp.zeros((b,), jnp.int32))
            mask = attention_mask_fn(am, jnp.arange(t), t)
            (h, _, _), _ = self.layers((h, None, 0), positions, mask, 0)
            return self.final_norm(h), None

        index = cache.index
        if positions is None:
            positions = default_positions(am, cache.pos)
        valid = jax.lax.dynamic_update_slice(cache.valid, am, (0, index))
        mask = attention_mask_fn(valid, index + jnp.arange(t), cache.max_len)
        (h, (k, v), _), _ = self.layers((h, (cache.k, cache.v), 0), positions, mask, index)
        new_pos = jnp.where(am.any(axis=1), jnp.max(jnp.where(am, positions, -1), axis=1) + 1,
                            cache.pos)
        new_cache = KVCache(k=k, v=v, valid=valid, pos=new_pos.astype(jnp.int32),
                            index=index + t)
        return self.final_norm(h), new_cache


attention_mask_fn = attention_mask
