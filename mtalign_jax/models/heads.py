"""Output heads: K multi-action LM heads, and the scalar / step / classifier heads of RMs and PRMs.

`MultiActionHeads` stores K untied LM heads as one `[K, D, V]` kernel. Three ways to apply it:
- `head_weights` [K]: one mixed head sum_i w_i W_i (w normalised to sum 1), exactly the logit
  ensemble softmax(sum_i w_i z_i) of the paper;
- `head_ids` [B]: each example through its own head only (routed; never all K heads);
- neither: head 0.

Routing without balanced groups: `lax.ragged_dot` where it is native (TPU); elsewhere XLA
lowers it to a masked product with every head (K x the FLOPs: measured 2.8 s vs 0.63 s for one
head at K=5, [768, 576] x [576, 49152] on CPU), so `per_example_logits` loops over the examples
instead, each through its own head (one head's FLOPs, a hand-written backward that adds each
example's head gradient in place).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtalign_jax.models.presets import ModelConfig


def normalize_weights(head_weights: jax.Array) -> jax.Array:
    """w / sum(w) in float32; weights must be non-negative."""
    w = jnp.asarray(head_weights, jnp.float32)
    return w / jnp.sum(w)


def mixed_kernel(kernel: jax.Array, head_weights: jax.Array) -> jax.Array:
    """sum_i w_i W_i for normalised w. kernel [K, D, V] -> [D, V]."""
    w = normalize_weights(head_weights).astype(kernel.dtype)
    return jnp.einsum("k,kdv->dv", w, kernel)


def routed_logits(
    h: jax.Array, head_ids: jax.Array, kernel: jax.Array, group_size: Optional[int] = None
) -> jax.Array:
    """Each row of h through its own head: h [N, D], head_ids [N], kernel [K, D, V] -> [N, V].

    With `group_size` (every head owns exactly that many rows, as the balanced loader
    guarantees) rows are sorted by head and projected with one batched einsum
    [K, n, D] x [K, D, V]; otherwise `lax.ragged_dot` over the sorted groups. Either way each
    row is multiplied by one head only. Output float32.
    """
    k = kernel.shape[0]
    if k == 1:
        return jnp.dot(h, kernel[0], preferred_element_type=jnp.float32)
    order = jnp.argsort(head_ids, stable=True)
    inv = jnp.argsort(order)
    hs = h[order]
    if group_size is not None:
        out = jnp.einsum("knd,kdv->knv", hs.reshape(k, group_size, -1), kernel,
                         preferred_element_type=jnp.float32).reshape(h.shape[0], -1)
    else:
        sizes = jnp.bincount(head_ids, length=k).astype(jnp.int32)
        out = jax.lax.ragged_dot(hs, kernel, sizes, preferred_element_type=jnp.float32)
    return out[inv]


def _head(kernel: jax.Array, i: jax.Array) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(kernel, i, axis=0, keepdims=False)


@jax.custom_vjp
def per_example_logits(h: jax.Array, head_ids: jax.Array, kernel: jax.Array) -> jax.Array:
    """Example b through head head_ids[b] only: h [B, T, D], head_ids [B] int, kernel
    [K, D, V] -> [B, T, V] float32.

    A `lax.map` over the B examples, each one [T, D] x [D, V] product with its head sliced out
    of the kernel: the FLOPs of one head whatever K and however unevenly the examples fall on
    the heads. The backward (custom: autodiff of the slice would add a [K, D, V] zero tensor
    per example) is a scan that adds h_b^T g_b into head head_ids[b] of a float32 [K, D, V]
    accumulator in place, and computes g_b W^T.
    """
    return _per_example_fwd(h, head_ids, kernel)[0]


def _per_example_fwd(h, head_ids, kernel):
    out = jax.lax.map(lambda a: jnp.dot(a[0], _head(kernel, a[1]),
                                        preferred_element_type=jnp.float32), (h, head_ids))
    return out, (h, head_ids, kernel)


def _per_example_bwd(res, g):
    h, head_ids, kernel = res

    def body(dk, a):
        hb, i, gb = a  # [T, D], scalar, [T, V] float32
        w = _head(kernel, i)
        dh = jnp.dot(gb.astype(w.dtype), w.T, preferred_element_type=jnp.float32)
        dw = jnp.dot(hb.T.astype(jnp.float32), gb, preferred_element_type=jnp.float32)
        dk = jax.lax.dynamic_update_index_in_dim(dk, _head(dk, i) + dw, i, axis=0)
        return dk, dh.astype(h.dtype)

    dk, dh = jax.lax.scan(body, jnp.zeros(kernel.shape, jnp.float32), (h, head_ids, g))
    return dh, None, dk.astype(kernel.dtype)


per_example_logits.defvjp(_per_example_fwd, _per_example_bwd)


class MultiActionHeads(nn.Module):
    """K linear LM heads. h [..., D] -> logits [..., V] float32."""

    cfg: ModelConfig
    num_heads: int = 1

    @nn.compact
    def __call__(self, h, head_ids=None, head_weights=None, group_size=None):
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                         ("action_heads", "embed", "vocab")),
            (self.num_heads, self.cfg.d_model, self.cfg.vocab_size),
            jnp.dtype(self.cfg.param_dtype))
        kernel = kernel.astype(jnp.dtype(self.cfg.dtype))
        if head_weights is not None:
            return jnp.dot(h, mixed_kernel(kernel, head_weights),
                           preferred_element_type=jnp.float32)
        if head_ids is None:
            return jnp.dot(h, kernel[0], preferred_element_type=jnp.float32)
        lead = h.shape[:-1]
        if (group_size is None and self.num_heads > 1 and head_ids.shape == lead[:1]
                and jax.default_backend() != "tpu"):  # off TPU ragged_dot costs K heads
            x = h.reshape(lead[0], -1, h.shape[-1])
            return per_example_logits(x, head_ids, kernel).reshape(lead + (kernel.shape[-1],))
        ids = jnp.broadcast_to(head_ids.reshape(head_ids.shape + (1,) * (len(lead) - 1)), lead)
        per_row = group_size * (h[0].size // h.shape[-1]) if group_size else None
        out = routed_logits(h.reshape(-1, h.shape[-1]), ids.reshape(-1), kernel, per_row)
        return out.reshape(lead + (out.shape[-1],))


class ScalarHead(nn.Module):
    """Linear D -> `out` (1 for a Bradley-Terry reward, 2 for a classifier). h [..., D]."""

    out: int = 1
    bias: bool = False

    @nn.compact
    def __call__(self, h):
        y = nn.Dense(self.out, use_bias=self.bias, dtype=jnp.float32, param_dtype=jnp.float32,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.normal(0.02), ("embed", None)),
                     name="score")(h.astype(jnp.float32))
        return y[..., 0] if self.out == 1 else y


class MLPHead(nn.Module):
    """Two-layer head D -> D -> out with ReLU (the paper's value head; Qwen PRM's `score`).

    Init N(0, 0.02), zero biases, float32. h [..., D] -> [...] (out == 1) or [..., out].
    """

    out: int = 1
    hidden: Optional[int] = None

    @nn.compact
    def __call__(self, h):
        d = self.hidden or h.shape[-1]
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", None))
        x = nn.Dense(d, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=init,
                     name="fc1")(h.astype(jnp.float32))
        y = nn.Dense(self.out, dtype=jnp.float32, param_dtype=jnp.float32,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.normal(0.02), (None, None)),
                     name="fc2")(nn.relu(x))
        return y[..., 0] if self.out == 1 else y


def perturbed_heads(base: jax.Array, num_heads: int, noise: float, seed: int) -> jax.Array:
    """K copies of a base LM head [D, V] plus noise * N(0, 1). Returns [K, D, V] in base's dtype.

    Head i's noise key is `jax.random.fold_in(jax.random.PRNGKey(seed), i)` (DESIGN.md; MAH-DPO
    configs use seed 42). The paper seeds head i with torch seed 42 + 100 i, but torch's
    per-seed RNG streams (Mersenne Twister / Philox as torch consumes them) cannot be
    reproduced in JAX, so the exact noise differs whatever seed arithmetic we copy. We keep
    what matters: one fixed, documented seed, an independent stream per head, the same heads
    on every host and run (fold_in is deterministic and counter-based), and head i's noise not
    depending on K."""
    def one(i):
        eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), i), base.shape,
                                jnp.float32)
        return (base.astype(jnp.float32) + noise * eps).astype(base.dtype)
    return jnp.stack([one(i) for i in range(num_heads)])
