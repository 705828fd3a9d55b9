"""Transformer building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Every parameter carries logical axis names (never mesh axes); `parallel/rules.py` maps them.
Kernels are applied as `x @ kernel` (the transpose of a HF `weight`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtalign_jax.models.presets import ModelConfig

Dtype = jnp.dtype


def _init(names, std=0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32. x: [..., D]."""

    eps: float
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (x.shape[-1],), jnp.dtype(self.param_dtype))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(jnp.dtype(self.dtype))


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
    """Inverse frequencies [hd/2], with HF's `llama3` scaling when configured."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    sc = cfg.rope_scaling
    if sc and sc.get("rope_type", sc.get("type")) == "llama3":
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        lo_wl, hi_wl = old / lo, old / hi
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv / factor + smooth * inv
        inv = jnp.where(wavelen > lo_wl, inv / factor, jnp.where(wavelen < hi_wl, inv, mid))
    elif sc:
        raise NotImplementedError(f"rope_scaling {sc!r} is not supported")
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF rotate-half RoPE. x: [B, T, H, hd]; positions: [B, T] int."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, hd]
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rot * sin).astype(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention with an optional in-place KV cache.

    Call: x [B, T, D], positions [B, T], mask [B, 1, T, S] bool, and either no cache (S == T) or
    the whole cache `(k_all, v_all)` [L, B, S, Hkv, hd] plus this layer's index and the write
    slot; returns (y [B, T, D], updated (k_all, v_all) or None).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, layer=None, index=None):
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        b, t, _ = x.shape

        def proj(name, heads, logical):
            return nn.Dense(
                heads * cfg.head_dim, use_bias=cfg.qkv_bias, dtype=dt, param_dtype=pdt,
                kernel_init=_init(("embed", logical)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (logical,)),
                name=name)(x).reshape(b, t, heads, cfg.head_dim)

        q = proj("q_proj", cfg.n_heads, "q_heads")
        k = proj("k_proj", cfg.n_kv_heads, "kv_heads")
        v = proj("v_proj", cfg.n_kv_heads, "kv_heads")
        inv = rope_inv_freq(cfg)
        q, k = apply_rope(q, positions, inv), apply_rope(k, positions, inv)

        if cache is not None:
            k_all, v_all = cache
            start = (layer, 0, index, 0, 0)
            k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), start)
            v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), start)
            keys = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False).astype(dt)
            vals = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False).astype(dt)
            new_cache = (k_all, v_all)
        else:
            keys, vals, new_cache = k, v, None

        y = jax.nn.dot_product_attention(q, keys, vals, mask=mask)  # [B, T, Hq, hd]
        y = nn.Dense(cfg.d_model, use_bias=False, dtype=dt, param_dtype=pdt,
                     kernel_init=_init(("q_heads", "embed")),
                     name="o_proj")(y.reshape(b, t, cfg.n_heads * cfg.head_dim))
        return y, new_cache


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). x: [B, T, D]."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        dense = lambda f, names, name: nn.Dense(  # noqa: E731
            f, use_bias=False, dtype=dt, param_dtype=pdt, kernel_init=_init(names), name=name)
        g = dense(cfg.d_ff, ("embed", "mlp"), "gate_proj")(x)
        u = dense(cfg.d_ff, ("embed", "mlp"), "up_proj")(x)
        return dense(cfg.d_model, ("mlp", "embed"), "down_proj")(nn.silu(g) * u)
