"""Outcome reward-model losses: Bradley-Terry pairs and 2-class classifiers.

Bradley-Terry (PAPER.md §2.3 case C): -log sigmoid(r(x, y_w) - r(x, y_l)), optionally with a
margin and a reward-centring penalty center_coef * (r_w + r_l)^2 (keeps rewards near zero mean;
Eisenstein et al. 2023). Classifiers (the paper's engagement / tutoring RMs) are 2-class
cross-entropy models whose score is P(class 1).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def bradley_terry_loss(r_chosen: jax.Array, r_rejected: jax.Array, *,
                       margin: Optional[jax.Array] = None, center_coef: float = 0.0
                       ) -> tuple[jax.Array, jax.Array]:
    """Per-pair Bradley-Terry loss.

      loss = -log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2

    Args:
      r_chosen, r_rejected: [B] scalar rewards.
      margin: optional [B] (or scalar) required reward gap; None = 0.
      center_coef: weight of the reward-centring penalty.
    Returns:
      (losses [B], accuracy [B] float: 1 where r_c > r_r).
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"bradley_terry_loss: r_chosen {r_chosen.shape} and r_rejected "
                         f"{r_rejected.shape} must have the same shape")
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    losses = -jax.nn.log_sigmoid(diff)
    if center_coef:
        losses = losses + center_coef * (r_chosen + r_rejected) ** 2
    accuracy = (r_chosen > r_rejected).astype(losses.dtype)
    return losses, accuracy


def positive_score(logits: jax.Array) -> jax.Array:
    """P(class 1) of 2-class logits [..., 2] -> [...] (= sigmoid(z1 - z0))."""
    if logits.shape[-1] != 2:
        raise ValueError(f"positive_score: logits must end in 2 classes, got {logits.shape}")
    return jax.nn.sigmoid(logits[..., 1] - logits[..., 0])


def classifier_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2-class cross-entropy.

    Args:
      logits: [B, 2] (computed in at least float32).
      labels: [B] int in {0, 1}.
    Returns:
      (losses [B], accuracy [B] float: 1 where argmax == label).
    """
    if logits.ndim != 2 or logits.shape[-1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"classifier_loss: need logits [B, 2] and labels [B]; got "
                         f"{logits.shape} and {labels.shape}")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    accuracy = (jnp.argmax(logits, axis=-1) == labels).astype(losses.dtype)
    return losses, accuracy
