"""CausalLM: the shared decoder trunk plus K multi-action LM heads.

Parameters: `{"trunk": ..., "heads": {"kernel": [K, D, V]}}` (docs/ARCHITECTURE.md).

    model = CausalLM(cfg, num_heads=2)
    logits = model.apply({"params": p}, input_ids)                       # [B, T, V], head 0
    logits = model.apply({"params": p}, ids, head_weights=jnp.array([.5, .5]))  # mixed head
    logits, cache = model.apply({"params": p}, ids, cache=cache)          # incremental
    h, cache = model.apply({"params": p}, ids, method=CausalLM.hidden)    # [B, T, D]
    z = model.apply({"params": p}, h, head_ids=ids_b, method=CausalLM.project)
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtalign_jax.models.heads import MultiActionHeads
from mtalign_jax.models.kv_cache import KVCache
from mtalign_jax.models.presets import ModelConfig
from mtalign_jax.models.trunk import Trunk


class CausalLM(nn.Module):
    cfg: ModelConfig
    num_heads: int = 1

    def setup(self):
        self.trunk = Trunk(self.cfg)
        self.heads = MultiActionHeads(self.cfg, self.num_heads)

    def hidden(
        self,
        input_ids: jax.Array,
        positions: Optional[jax.Array] = None,
        attention_mask: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
    ):
        """input_ids [B, T] -> (final-norm hidden [B, T, D], new cache or None)."""
        return self.trunk(input_ids, positions, attention_mask, cache)

    def project(self, h, head_ids=None, head_weights=None, group_size=None):
        """hidden [..., D] -> float32 logits [..., V] (head 0, routed by head_ids, or mixed)."""
        return self.heads(h, head_ids=head_ids, head_weights=head_weights,
                          group_size=group_size)

    def __call__(
        self,
        input_ids: jax.Array,
        positions: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
        head_ids: Optional[jax.Array] = None,
        head_weights: Optional[jax.Array] = None,
        attention_mask: Optional[jax.Array] = None,
    ):
        """input_ids [B, T] -> logits [B, T, V] float32, or (logits, cache) given a cache."""
        h, new_cache = self.trunk(input_ids, positions, attention_mask, cache)
        logits = self.heads(h, head_ids=head_ids, head_weights=head_weights)
        return logits if cache is None else (logits, new_cache)


def init_params(model: CausalLM, rng: jax.Array, seq_len: int = 8):
    """Unboxed float parameters of a freshly initialised model (small models / tests)."""
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, seq_len), jnp.int32)))
    return nn.unbox(init(rng)["params"])
