"""Explicit KV-cache pytree for incremental decoding and candidate search.

Layout (all rows share one write index because prompts are left-padded):
  k      [L, B, Hkv, hd, S]  keys per layer, stored transposed (slots last: a decode step's
                             scores read them in order, no per-step transpose of the cache)
  v      [L, B, Hkv, S, hd]  values per layer and slot
  valid  [B, S] bool         slot holds a real (non-pad) token
  pos    [B] int32           RoPE position id the next token of each row gets
  index  [] int32            next slot to write (same for every row)

`per_layer(cache)` holds k and v as tuples of L per-layer arrays instead (the unrolled decode
layout, `models/unrolled.py`); `stacked` turns it back.

Caches are immutable pytrees: a "clone" is free, `repeat` builds K candidate rows per prompt and
`gather` keeps the chosen ones. Jitted decode loops donate the cache so updates happen in place.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from mtalign_jax.models.presets import ModelConfig


@flax.struct.dataclass
class KVCache:
    k: jax.Array
    v: jax.Array
    valid: jax.Array
    pos: jax.Array
    index: jax.Array

    @property
    def batch(self) -> int:
        return _layer_shape(self.k)[0]

    @property
    def max_len(self) -> int:
        return _layer_shape(self.k)[-1]


def _layer_shape(k) -> tuple:
    """One layer's key shape [B, Hkv, hd, S], of a stacked [L, ...] or a per-layer tuple."""
    return k[0].shape if isinstance(k, (tuple, list)) else k.shape[1:]


def per_layer(cache: KVCache) -> KVCache:
    """The same cache with k and v as tuples of L per-layer arrays (`models/unrolled.py`: in a
    decode loop every layer then reads and writes its own buffer). Inside jit: one copy."""
    if isinstance(cache.k, (tuple, list)):
        return cache
    n = cache.k.shape[0]
    return cache.replace(k=tuple(cache.k[i] for i in range(n)),
                         v=tuple(cache.v[i] for i in range(n)))


def stacked(cache: KVCache) -> KVCache:
    """Inverse of `per_layer`: k [L, B, Hkv, hd, S], v [L, B, Hkv, S, hd]."""
    if not isinstance(cache.k, (tuple, list)):
        return cache
    return cache.replace(k=jnp.stack(cache.k), v=jnp.stack(cache.v))


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache with `max_len` slots per row."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    kshape = (cfg.n_layers, batch, cfg.n_kv_heads, cfg.head_dim, max_len)
    vshape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
    return KVCache(
        k=jnp.zeros(kshape, dtype),
        v=jnp.zeros(vshape, dtype),
        valid=jnp.zeros((batch, max_len), bool),
        pos=jnp.zeros((batch,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def repeat(cache: KVCache, k: int) -> KVCache:
    """Each row repeated `k` times, row-major: row b becomes rows b*k .. b*k+k-1."""
    return KVCache(
        k=jnp.repeat(cache.k, k, axis=1),
        v=jnp.repeat(cache.v, k, axis=1),
        valid=jnp.repeat(cache.valid, k, axis=0),
        pos=jnp.repeat(cache.pos, k, axis=0),
        index=cache.index,
    )


def gather(cache: KVCache, rows: jax.Array) -> KVCache:
    """Rows `rows` [B'] of the cache (e.g. the winning candidate of each prompt)."""
    return KVCache(
        k=jnp.take(cache.k, rows, axis=1),
        v=jnp.take(cache.v, rows, axis=1),
        valid=jnp.take(cache.valid, rows, axis=0),
        pos=jnp.take(cache.pos, rows, axis=0),
        index=cache.index,
    )


def nbytes(cache: KVCache) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(cache))
