"""Token and sequence log-probabilities under the causal-LM convention, and the SFT loss.

Convention (DESIGN.md §4): `labels[b, t]` is scored by `logits[b, t-1]` (the logits at
position t-1 predict token t); a label of -100 is ignored. So `labels[:, 0]` is never scored.

The log-softmax is computed in at least float32 (float64 when the input is float64, as under
x64 in the golden test) and the result is never downcast.

`sequence_logps_from_hidden` computes the same numbers from hidden states and an LM-head matrix
by scanning over vocabulary chunks with a running logsumexp, so the `[B, T, V]` logits are never
materialised (neither in the forward pass nor, thanks to rematerialisation, in the backward pass).
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


def _compute_dtype(dtype) -> jnp.dtype:
    """At least float32; float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _check_pair(logits_shape, labels_shape, where: str) -> None:
    if len(labels_shape) != 2 or tuple(logits_shape[:2]) != tuple(labels_shape):
        raise ValueError(f"{where}: labels must be [B, T] matching logits [B, T, ...]; got "
                         f"logits {tuple(logits_shape)} and labels {tuple(labels_shape)}")


def token_logps(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token log-probs of the shifted labels.

    Args:
      logits: [B, T, V] (any float dtype).
      labels: [B, T] int; -100 = ignored.
    Returns:
      (logps [B, T-1], mask [B, T-1] bool): `logps[b, i] = log p(labels[b, i+1] | logits[b, i])`,
      0 where the label is ignored; float32 (float64 for float64 logits).
    """
    if logits.ndim != 3:
        raise ValueError(f"token_logps: logits must be [B, T, V], got shape {logits.shape}")
    _check_pair(logits.shape, labels.shape, "token_logps")
    logits = logits[:, :-1].astype(_compute_dtype(logits.dtype))
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    logp = jax.nn.log_softmax(logits, axis=-1)
    safe = jnp.where(mask, labels, 0)
    tok = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.where(mask, tok, 0.0), mask


def _reduce(tok: jax.Array, mask: jax.Array, average: bool) -> jax.Array:
    total = jnp.sum(tok, axis=-1)
    if not average:
        return total
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(total.dtype)


def sequence_logps(logits: jax.Array, labels: jax.Array, average: bool = False) -> jax.Array:
    """Sequence log-probs [B]: sum (or mean when `average`) of the scored tokens' log-probs.

    Args:
      logits: [B, T, V]; labels: [B, T] int (-100 ignored; causal shift applied here).
    Returns:
      [B] float32 (float64 for float64 logits). A row with no scored token gives 0.
    """
    tok, mask = token_logps(logits, labels)
    return _reduce(tok, mask, average)


def sft_loss(logits: jax.Array, labels: jax.Array, *, token_mean: bool = False) -> jax.Array:
    """SFT negative log-likelihood (PAPER.md §3.5), a scalar.

    Default: the response-token NLL summed per example, then averaged over the batch.
    `token_mean=True`: total NLL divided by the total number of scored tokens in the batch.

    Args: logits [B, T, V]; labels [B, T] (-100 on prompt/padding tokens).
    """
    tok, mask = token_logps(logits, labels)
    if token_mean:
        return -jnp.sum(tok) / jnp.maximum(jnp.sum(mask), 1).astype(tok.dtype)
    return -jnp.mean(jnp.sum(tok, axis=-1))


def sequence_logps_from_hidden(h: jax.Array, w: jax.Array, labels: jax.Array, *,
                               head_ids: Optional[jax.Array] = None, chunk: int = 8192,
                               average: bool = False) -> jax.Array:
    """Sequence log-probs [B] from hidden states and a head matrix, chunked over the vocabulary.

    Equal to `sequence_logps(h @ w, labels)` but never builds the [B, T, V] logits: a `lax.scan`
    over vocabulary chunks of width `chunk` keeps a running (max, sum-exp) pair per position; the
    chunk body is rematerialised so the backward pass does not store the chunks either.

    Args:
      h: [B, T, D] hidden states (the final-norm output).
      w: [D, V] one head, or [K, D, V] stacked heads (then `head_ids` [B] picks each row's head).
      labels: [B, T] int, -100 ignored, causal shift applied here.
      head_ids: [B] int, required iff `w` is [K, D, V].
      chunk: vocabulary chunk width (static); V need not be a multiple of it.
      average: mean instead of sum over the scored tokens.
    Returns:
      [B] float32 (float64 for float64 inputs).
    """
    if h.ndim != 3:
        raise ValueError(f"sequence_logps_from_hidden: h must be [B, T, D], got {h.shape}")
    _check_pair(h.shape, labels.shape, "sequence_logps_from_hidden")
    if w.ndim == 2:
        if head_ids is not None:
            raise ValueError("sequence_logps_from_hidden: head_ids given but w is one head [D, V]")
        w = w[None]
        head_ids = jnp.zeros((h.shape[0],), jnp.int32)
    elif w.ndim == 3:
        if head_ids is None or head_ids.shape != (h.shape[0],):
            raise ValueError("sequence_logps_from_hidden: w is [K, D, V]; head_ids must be [B] "
                             f"with B={h.shape[0]}, got "
                             f"{None if head_ids is None else head_ids.shape}")
    else:
        raise ValueError("sequence_logps_from_hidden: w must be [D, V] or [K, D, V], "
                         f"got {w.shape}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(f"sequence_logps_from_hidden: hidden size {h.shape[-1]} does not match "
                         f"w {w.shape}")
    if chunk < 1:
        raise ValueError(f"sequence_logps_from_hidden: chunk must be >= 1, got {chunk}")

    dt = _compute_dtype(jnp.promote_types(h.dtype, w.dtype))
    vocab = w.shape[-1]
    chunk = min(chunk, vocab)
    n_chunks = math.ceil(vocab / chunk)
    hs = h[:, :-1].astype(dt)                              # [B, T-1, D]
    lab = labels[:, 1:]
    mask = lab != IGNORE_INDEX
    safe = jnp.where(mask, lab, 0)

    # Logit of each label: h . w[head, :, label]   -> [B, T-1]
    w_cols = jnp.swapaxes(w, 1, 2)[head_ids[:, None], safe]  # [B, T-1, D]
    label_logit = jnp.sum(hs * w_cols.astype(dt), axis=-1)

    pad = n_chunks * chunk - vocab
    wp = jnp.pad(w, ((0, 0), (0, 0), (0, pad)))
    wc = jnp.moveaxis(wp.reshape(w.shape[0], w.shape[1], n_chunks, chunk), 2, 0)  # [n, K, D, C]
    starts = jnp.arange(n_chunks) * chunk

    @jax.checkpoint
    def body(carry, xs):
        m, s = carry                                       # [B, T-1] each
        w_chunk, start = xs                                # [K, D, C], scalar
        wb = w_chunk[head_ids].astype(dt)                  # [B, D, C]
        z = jnp.einsum("btd,bdc->btc", hs, wb)
        valid = (start + jnp.arange(chunk)) < vocab
        z = jnp.where(valid, z, -jnp.inf)
        m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(z, axis=-1)))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(z - m_new[..., None]), axis=-1)
        return (m_new, s), None

    init = (jnp.full(lab.shape, -jnp.inf, dt), jnp.zeros(lab.shape, dt))
    (m, s), _ = jax.lax.scan(body, init, (wc, starts))
    lse = m + jnp.log(s)
    tok = jnp.where(mask, label_logit - lse, 0.0)
    return _reduce(tok, mask, average)
