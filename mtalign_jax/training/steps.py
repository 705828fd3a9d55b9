"""Pure step functions per task: `step(state, batch, rng) -> (state, metrics)`.

Batches (docs/ARCHITECTURE.md) carry, besides `input_ids`, `attention_mask` [B, T]:
  resp_idx    [B, R] int32  positions t whose next token is a response label (0-padded)
  resp_labels [B, R] int32  the label scored at each such position (-100 = padding)
so logits are computed only at response positions ([B, R, V], never [B, T, V]).
Preference batches hold P chosen rows then P rejected rows and `objective_ids` [2P]; with
precomputed reference log-probs also `ref_chosen`, `ref_rejected` [P] (float32).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from mtalign_jax.losses import multihead_reduce, preference_loss
from mtalign_jax.models.model import CausalLM
from mtalign_jax.training.state import TrainState


def gathered_logps(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Summed log-probs [B] of labels [B, R] under logits [B, R, V]; -100 is ignored.

    log-softmax in float32 (float64 under x64), never downcast.
    """
    dt = jnp.promote_types(logits.dtype, jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(dt), axis=-1)
    mask = labels != -100
    tok = jnp.take_along_axis(logp, jnp.where(mask, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(mask, tok, 0.0), axis=-1)


def response_logps(model: CausalLM, params, batch, *, head_ids=None, group_size=None,
                   hidden_fn: Optional[Callable] = None) -> jax.Array:
    """Sequence log-probs [B] of the response tokens, each row through its own head.

    `hidden_fn(params, batch) -> h [B, T, D]` overrides the trunk (e.g. the top layers on
    cached lower-layer activations).
    """
    if hidden_fn is None:
        h, _ = model.apply({"params": params}, batch["input_ids"],
                           attention_mask=batch["attention_mask"], method=CausalLM.hidden)
    else:
        h = hidden_fn(params, batch)
    hr = jnp.take_along_axis(h, batch["resp_idx"][..., None], axis=1)  # [B, R, D]
    logits = model.apply({"params": params}, hr, head_ids=head_ids, group_size=group_size,
                         method=CausalLM.project)
    return gathered_logps(logits, batch["resp_labels"])


def _finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, loss, grads,
                    metrics: dict):
    """One optimizer update, skipped (state kept bit-identical, `skipped` += 1) when the loss
    or any gradient is not finite; `metrics["finite"]` tells the loop (which stops the run when
    the config says nan_policy='stop')."""
    finite = jnp.isfinite(loss) & _finite(grads)
    safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
        lambda a, b: jnp.where(finite, a, b), new, old)
    new = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    metrics = dict(metrics, finite=finite, skipped=new.skipped,
                   grad_norm=optax.global_norm(safe_grads))
    return new, metrics


def sft_loss_fn(model: CausalLM, params, batch, hidden_fn=None):
    """Paper SFT loss: summed response NLL per example, averaged over the batch."""
    lp = response_logps(model, params, batch, hidden_fn=hidden_fn)
    ntok = jnp.sum(batch["resp_labels"] != -100)
    loss = -jnp.mean(lp)
    return loss, {"loss": loss, "nll_per_token": -jnp.sum(lp) / jnp.maximum(ntok, 1),
                  "tokens": ntok}


def make_sft_step(model: CausalLM, tx, hidden_fn=None):
    def step(state: TrainState, batch, rng):
        del rng
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: sft_loss_fn(model, p, batch, hidden_fn), has_aux=True)(state.params)
        return apply_gradients(state, tx, loss, grads, metrics)

    def evaluate(params, batch):
        return sft_loss_fn(model, params, batch, hidden_fn)[1]

    return step, evaluate


def preference_loss_fn(model: CausalLM, params, batch, *, objectives: Sequence[str], beta: float,
                       label_smoothing=0.0, ipo=False, reference_free=False,
                       objective_weights=None, routed=True, group_size=None,
                       ref_model=None, ref_params=None, hidden_fn=None, ref_hidden_fn=None):
    """MAH-DPO (routed=True: objective k trains head k) or single-head DPO (routed=False).

    Loss = mean over the objectives present of each objective's mean DPO loss (or the
    weighted mean with `objective_weights`). Returns (loss, metrics) with per-objective
    `loss/<obj>` and `rewards/<obj>/{chosen,rejected,margin,accuracy}`.
    """
    k = len(objectives)
    obj = batch["objective_ids"]  # [2P]
    p = obj.shape[0] // 2
    head_ids = obj if routed else jnp.zeros_like(obj)
    lp = response_logps(model, params, batch, head_ids=head_ids,
                        group_size=group_size if routed else None, hidden_fn=hidden_fn)
    if ref_model is None:
        ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
    else:
        rl = jax.lax.stop_gradient(response_logps(ref_model, ref_params, batch,
                                                  hidden_fn=ref_hidden_fn))
        ref_c, ref_r = rl[:p], rl[p:]
    losses, cr, rr = preference_loss(lp[:p], lp[p:], ref_c, ref_r, beta=beta,
                                     label_smoothing=label_smoothing, ipo=ipo,
                                     reference_free=reference_free)
    w = None if objective_weights is None else jnp.asarray(objective_weights, jnp.float32)
    total, per_obj, count = multihead_reduce(losses, obj[:p], k, w)
    metrics = {"loss": total}
    seg = lambda x: jax.ops.segment_sum(x, obj[:p], num_segments=k) / jnp.maximum(count, 1)  # noqa
    chosen, rejected = seg(cr), seg(rr)
    margin, acc = seg(cr - rr), seg((cr > rr).astype(jnp.float32))
    for i, name in enumerate(objectives):
        metrics[f"loss/{name}"] = per_obj[i]
        metrics[f"count/{name}"] = count[i]
        metrics[f"rewards/{name}/chosen"] = chosen[i]
        metrics[f"rewards/{name}/rejected"] = rejected[i]
        metrics[f"rewards/{name}/margin"] = margin[i]
        metrics[f"rewards/{name}/accuracy"] = acc[i]
    metrics["rewards/accuracy"] = jnp.mean((cr > rr).astype(jnp.float32))
    return total, metrics


def make_preference_step(model: CausalLM, tx, **loss_kw):
    def step(state: TrainState, batch, rng):
        del rng
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: preference_loss_fn(model, p, batch, **loss_kw), has_aux=True)(state.params)
        return apply_gradients(state, tx, loss, grads, metrics)

    def evaluate(params, batch):
        return preference_loss_fn(model, params, batch, **loss_kw)[1]

    return step, evaluate
