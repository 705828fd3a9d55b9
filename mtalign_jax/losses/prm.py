"""Process-reward-model losses and label construction (PAPER.md §2.2-2.3).

- `step_bce_loss`: binary step PRM (hard or soft labels), mean over valid steps.
- `value_mse_loss`: step value model regression, mean over valid steps.
- `hindsight_value_targets`: the hindsight-relabelled value targets of §2.2.
- `case_a_majority_labels`: the majority-vote step labels of §2.3 case A.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def _check_same(name: str, **arrays) -> None:
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: shapes must match, got {shapes}")


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def step_bce_loss(step_logits: jax.Array, step_labels: jax.Array, step_mask: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """Binary cross-entropy on step logits, averaged over the valid steps of the batch.

    Args:
      step_logits: [B, S] one logit per step (at the step-separator token).
      step_labels: [B, S] targets in [0, 1] (soft labels allowed).
      step_mask: [B, S] bool/int, 1 where a step exists.
    Returns:
      (loss scalar; 0 with no valid step, probs [B, S] = sigmoid(step_logits)).
    """
    _check_same("step_bce_loss", step_logits=step_logits, step_labels=step_labels,
                step_mask=step_mask)
    logits = step_logits.astype(jnp.promote_types(step_logits.dtype, jnp.float32))
    per_step = optax.sigmoid_binary_cross_entropy(logits, step_labels.astype(logits.dtype))
    return _masked_mean(per_step, step_mask), jax.nn.sigmoid(logits)


def value_mse_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over the valid steps (PAPER.md §2.2 L_PRM).

    Args: pred, target, mask: [B, S] (mask 1 where a step exists). Returns a scalar (0 if none).
    """
    _check_same("value_mse_loss", pred=pred, target=target, mask=mask)
    pred = pred.astype(jnp.promote_types(pred.dtype, jnp.float32))
    return _masked_mean((pred - target.astype(pred.dtype)) ** 2, mask)


def hindsight_value_targets(step_rewards: jax.Array, outcomes: jax.Array, gamma: float = 0.9,
                            step_mask: Optional[jax.Array] = None) -> jax.Array:
    """Hindsight-relabelled value targets (PAPER.md §2.2).

    Reading of the notation: a solution has n steps, indexed by the 1-based step t = 1..n (the
    array index is t-1). From each prefix y_{1:t}, M rollouts are run to completion and graded,
    giving z_{t,m} in {0, 1}. Then

        r~_{t,m} = r_t + gamma^(n - t) * z_{t,m},      V_t = (1/M) sum_m r~_{t,m}
                 = r_t + gamma^(n - t) * mean_m z_{t,m}.

    So the last step (t = n) gets the undiscounted outcome and step t = 1 the most discounted
    one; n is the number of steps of the labelled solution (not of each rollout).

    Args:
      step_rewards: [..., n] r_t.
      outcomes: [..., n, M] per-step rollout outcomes z_{t,m}, or [..., M] one set of outcomes
        shared by every step.
      gamma: discount in (0, 1].
      step_mask: optional [..., n], 1 for the real steps, which come first in each row
        (right padding); n per row is then sum(step_mask) and padded steps get target 0.
    Returns:
      [..., n] value targets V_t (float32, or float64 for float64 inputs).
    """
    dt = jnp.promote_types(jnp.result_type(step_rewards, outcomes), jnp.float32)
    r = jnp.asarray(step_rewards, dt)
    z = jnp.asarray(outcomes, dt)
    n_max = r.shape[-1]
    if z.ndim == r.ndim + 1 and z.shape[:-1] == r.shape:
        z_mean = jnp.mean(z, axis=-1)                       # [..., n]
    elif z.ndim == r.ndim and z.shape[:-1] == r.shape[:-1]:
        z_mean = jnp.mean(z, axis=-1, keepdims=True)        # [..., 1] shared by all steps
    else:
        raise ValueError(f"hindsight_value_targets: outcomes must be [..., n, M] or [..., M] for "
                         f"step_rewards [..., n]; got {z.shape} and {r.shape}")
    t = jnp.arange(1, n_max + 1, dtype=dt)                  # 1-based step index
    if step_mask is None:
        n = jnp.asarray(n_max, dt)
        mask = jnp.ones(r.shape, dt)
    else:
        if step_mask.shape != r.shape:
            raise ValueError(f"hindsight_value_targets: step_mask {step_mask.shape} must match "
                             f"step_rewards {r.shape}")
        mask = step_mask.astype(dt)
        n = jnp.sum(mask, axis=-1, keepdims=True)
    exponent = jnp.maximum(n - t, 0.0)
    return mask * (r + jnp.asarray(gamma, dt) ** exponent * z_mean)


def case_a_majority_labels(judgements: jax.Array) -> jax.Array:
    """Case-A step labels (PAPER.md §2.3): r_t = 1[ mean_m J(prefix_t, completion_m) > 1/2 ].

    Args: judgements [S, M] bool (or 0/1): judge verdict on each of M completions of step t.
    Returns: [S] int32 labels; a tie (exactly half positive) is 0.
    """
    if judgements.ndim != 2:
        raise ValueError("case_a_majority_labels: judgements must be [S, M], "
                         f"got {judgements.shape}")
    frac = jnp.mean(judgements.astype(jnp.float32), axis=-1)
    return (frac > 0.5).astype(jnp.int32)
