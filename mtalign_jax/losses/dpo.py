"""Preference losses: DPO / IPO / conservative DPO / reference-free, the per-objective (MAH-DPO)
reduction, and MODPO.

All inputs are summed sequence log-probs ([B] arrays, see `logprobs.sequence_logps`).
The formulas are DESIGN.md §4; the reduction is PAPER.md §3.3 (mean within each objective, then
the mean over the objectives present in the batch).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


def _rewards(pc, pr, rc, rr, beta):
    """Implicit rewards beta * (policy - reference) for chosen and rejected (metrics only)."""
    return beta * jax.lax.stop_gradient(pc - rc), beta * jax.lax.stop_gradient(pr - rr)


def preference_loss(policy_chosen_logps: jax.Array, policy_rejected_logps: jax.Array,
                    reference_chosen_logps: jax.Array, reference_rejected_logps: jax.Array, *,
                    beta: float, label_smoothing: float = 0.0, ipo: bool = False,
                    reference_free: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example DPO-family loss.

    With d = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    (the reference terms dropped when `reference_free`):
      DPO (conservative label smoothing ls): -(1-ls) log sigmoid(beta d) - ls log sigmoid(-beta d)
      IPO:                                        (d - 1/(2 beta))^2
    Rewards are always beta * (policy - reference), also when `reference_free`.

    Args: four [B] arrays of summed log-probs; `beta` > 0; `label_smoothing` in [0, 0.5].
    Returns: (losses [B], chosen_rewards [B], rejected_rewards [B]).
    """
    if isinstance(label_smoothing, (int, float)) and not 0.0 <= label_smoothing <= 0.5:
        raise ValueError("preference_loss: label_smoothing must be in [0, 0.5], "
                         f"got {label_smoothing}")
    if isinstance(beta, (int, float)) and beta <= 0:
        raise ValueError(f"preference_loss: beta must be > 0, got {beta}")
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    d = pi_logratios if reference_free else pi_logratios - ref_logratios
    if ipo:
        losses = (d - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * d)
                  - label_smoothing * jax.nn.log_sigmoid(-beta * d))
    chosen_rewards, rejected_rewards = _rewards(policy_chosen_logps, policy_rejected_logps,
                                                reference_chosen_logps, reference_rejected_logps,
                                                beta)
    return losses, chosen_rewards, rejected_rewards


def _check_head_ids(head_ids: jax.Array, num_heads: int) -> None:
    """Range check when the ids are concrete (outside jit); traced ids cannot be checked."""
    if isinstance(head_ids, jax.core.Tracer):
        return
    ids = np.asarray(head_ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_heads):
        raise ValueError(f"multihead_reduce: head_ids must lie in [0, {num_heads}), "
                         f"got min {int(ids.min())} max {int(ids.max())}")


def multihead_reduce(losses: jax.Array, head_ids: jax.Array, num_heads: int,
                     head_weights: Optional[jax.Array] = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean within each objective, then the (weighted) mean over the objectives present.

    Args:
      losses: [B] per-example losses.
      head_ids: [B] int objective (head) of each example, in [0, num_heads).
      num_heads: K (static).
      head_weights: optional [K] non-negative weights alpha_k; they are renormalised over the
        objectives present in the batch. None = equal weights (the paper's setting).
    Returns:
      (total scalar, per_head_loss [K], per_head_count [K] int32). An absent objective has
      count 0, loss 0, and contributes nothing to `total`. With no objective present (or all
      present weights 0) `total` is 0.
    Jit-able with static `num_heads` (segment sums, no Python loop over data).
    """
    if losses.ndim != 1 or head_ids.shape != losses.shape:
        raise ValueError(f"multihead_reduce: losses and head_ids must both be [B]; got "
                         f"{losses.shape} and {head_ids.shape}")
    _check_head_ids(head_ids, num_heads)
    sums = jax.ops.segment_sum(losses, head_ids, num_segments=num_heads)
    counts = jax.ops.segment_sum(jnp.ones_like(head_ids, jnp.int32), head_ids,
                                 num_segments=num_heads)
    present = counts > 0
    per_head = jnp.where(present, sums / jnp.maximum(counts, 1).astype(losses.dtype), 0.0)
    if head_weights is None:
        w = jnp.ones((num_heads,), losses.dtype)
    else:
        w = jnp.asarray(head_weights)
        if w.shape != (num_heads,):
            raise ValueError(f"multihead_reduce: head_weights must be [{num_heads}], got {w.shape}")
        w = w.astype(losses.dtype)
    w = jnp.where(present, w, 0.0)
    denom = jnp.sum(w)
    total = jnp.where(denom > 0, jnp.sum(w * per_head) / jnp.where(denom > 0, denom, 1.0), 0.0)
    return total, per_head, counts


def modpo_loss(policy_chosen_logps: jax.Array, policy_rejected_logps: jax.Array,
               reference_chosen_logps: jax.Array, reference_rejected_logps: jax.Array,
               other_reward_margins: jax.Array, *, beta: float, weight: float,
               other_weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """MODPO (Zhou et al. 2023) loss for one objective k, per example.

      loss = -log sigmoid( (beta / w_k) * d - (1 / w_k) * sum_j w_j (r_j(chosen) - r_j(rejected)) )

    where d is the policy-minus-reference log-ratio margin (as in DPO) and r_j (j != k) are the
    other objectives' reward models. With all `other_weights` 0 and w_k = 1 this is DPO.

    Args:
      four [B] summed log-probs;
      other_reward_margins: [B, J] r_j(x, y_chosen) - r_j(x, y_rejected) for the J other objectives;
      beta: > 0; weight: w_k > 0; other_weights: [J] weights w_j.
    Returns: (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are
      beta * (policy - reference) as in `preference_loss`.
    """
    if isinstance(weight, (int, float)) and weight <= 0:
        raise ValueError(f"modpo_loss: weight w_k must be > 0, got {weight}")
    other_weights = jnp.asarray(other_weights)
    if other_reward_margins.ndim != 2 or other_weights.shape != other_reward_margins.shape[1:]:
        raise ValueError(f"modpo_loss: other_reward_margins must be [B, J] and other_weights [J]; "
                         f"got {other_reward_margins.shape} and {other_weights.shape}")
    d = ((policy_chosen_logps - policy_rejected_logps)
         - (reference_chosen_logps - reference_rejected_logps))
    other = other_reward_margins @ other_weights.astype(other_reward_margins.dtype)
    losses = -jax.nn.log_sigmoid((beta / weight) * d - other / weight)
    chosen_rewards, rejected_rewards = _rewards(policy_chosen_logps, policy_rejected_logps,
                                                reference_chosen_logps, reference_rejected_logps,
                                                beta)
    return losses, chosen_rewards, rejected_rewards
