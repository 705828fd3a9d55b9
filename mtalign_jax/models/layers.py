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


def dot_f32(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` accumulated and returned in float32, then cast to lhs's dtype: the
    `dot_general` of every Dense here. The same numbers as a plain dot (float32: identical;
    bfloat16: one rounding of the float32 sum), but for bfloat16 compute XLA CPU runs
    bf16 x bf16 -> f32 on its fast path while a bf16 output takes a slower one than float32
    (`benchmarks/bf16_dot.py` measures both)."""
    del preferred_element_type  # always float32
    out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                              preferred_element_type=jnp.float32)
    return out.astype(lhs.dtype)


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


def _group(q, hkv):
    """q [B, T, Hq, hd] -> [B, Hkv, G, T, hd] float32, scaled by 1/sqrt(hd)."""
    b, t, hq, hd = q.shape
    qg = q.reshape(b, t, hkv, hq // hkv, hd).transpose(0, 2, 3, 1, 4)
    return qg.astype(jnp.float32) * (1.0 / math.sqrt(hd))


def _ungroup(y, dtype):
    """[B, Hkv, G, T, hd] -> [B, T, Hq, hd] (query head j reads kv head j // G)."""
    b, hkv, g, t, hd = y.shape
    return y.transpose(0, 3, 1, 2, 4).reshape(b, t, hkv * g, hd).astype(dtype)


def cached_attention(q, keys, vals, mask):
    """Grouped-query attention against cached keys [B, Hkv, hd, S] (stored transposed) and
    values [B, Hkv, S, hd]; q [B, T, Hq, hd], mask [B, 1, T, S] bool -> [B, T, Hq, hd].

    Both einsums read the cache in its stored order (scores: q [G, hd] @ keys [hd, S]; output:
    p [G, S] @ values [S, hd]), so XLA's CPU dot does not transpose a layer's cache every step.
    Scores and softmax in float32; a query always sees its own slot (trunk.attention_mask).
    """
    qg = _group(q, keys.shape[1])  # [B, Hkv, G, T, hd]
    s = jnp.einsum("bhgtd,bhds->bhgts", qg, keys.astype(jnp.float32))
    s = jnp.where(mask[:, :, None], s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1)
    return _ungroup(jnp.einsum("bhgts,bhsd->bhgtd", p, vals.astype(jnp.float32)), q.dtype)


class Attention(nn.Module):
    """Grouped-query attention with an optional in-place KV cache.

    Call: x [B, T, D], positions [B, T], mask [B, 1, T, S] bool, and either no cache (S == T) or
    the whole cache `(k_all, v_all)` ([L, B, Hkv, hd, S], [L, B, Hkv, S, hd]) plus this
    layer's index and the write slot; returns (y [B, T, D], updated (k_all, v_all) or None).
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
                dot_general=dot_f32, kernel_init=_init(("embed", logical)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (logical,)),
                name=name)(x).reshape(b, t, heads, cfg.head_dim)

        q = proj("q_proj", cfg.n_heads, "q_heads")
        k = proj("k_proj", cfg.n_kv_heads, "kv_heads")
        v = proj("v_proj", cfg.n_kv_heads, "kv_heads")
        inv = rope_inv_freq(cfg)
        q, k = apply_rope(q, positions, inv), apply_rope(k, positions, inv)

        if cache is None:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask)  # [B, T, Hq, hd]
            new_cache = None
        else:
            k_all, v_all = cache  # [L, B, Hkv, hd, S], [L, B, Hkv, S, hd]
            k_t = k.transpose(0, 2, 3, 1).astype(k_all.dtype)  # [B, Hkv, hd, T]
            v_t = v.transpose(0, 2, 1, 3).astype(v_all.dtype)  # [B, Hkv, T, hd]
            k_all = jax.lax.dynamic_update_slice(k_all, k_t[None], (layer, 0, 0, 0, index))
            v_all = jax.lax.dynamic_update_slice(v_all, v_t[None], (layer, 0, 0, index, 0))
            at = lambda c: jax.lax.dynamic_index_in_dim(c, layer, 0, keepdims=False)  # noqa
            y = cached_attention(q, at(k_all), at(v_all), mask)
            new_cache = (k_all, v_all)

        y = nn.Dense(cfg.d_model, use_bias=False, dtype=dt, param_dtype=pdt, dot_general=dot_f32,
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
            f, use_bias=False, dtype=dt, param_dtype=pdt, dot_general=dot_f32,
            kernel_init=_init(names), name=name)
        g = dense(cfg.d_ff, ("embed", "mlp"), "gate_proj")(x)
        u = dense(cfg.d_ff, ("embed", "mlp"), "up_proj")(x)
        return dense(cfg.d_model, ("mlp", "embed"), "down_proj")(nn.silu(g) * u)
