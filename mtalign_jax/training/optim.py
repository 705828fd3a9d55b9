"""The optimizer built from a config's `optim` section (optax only, no hand-written updates).

    tx = make_optimizer(config.optim, params)      # an optax.GradientTransformation
    opt_state = tx.init(params)

Config keys (`configs/*.py`, section `optim`):
  name            "rmsprop" | "adamw" | "sgd"
  lr              peak learning rate
  warmup_steps    W: lr * min(1, (step + 1) / (W + 1)) (the paper's LambdaLR warmup) ...
  schedule        ... then "constant", or "cosine" (decay to 0 at `total_steps`)
  total_steps     optimizer updates of the run (cosine only)
  weight_decay    L2 added to the gradient for rmsprop/sgd (as torch does); decoupled for adamw
  b1, b2, eps     Adam(W) moments and epsilon (eps is RMSprop's too)
  rmsprop_decay   RMSprop's alpha (0.99, torch's default)
  clip_norm       global-norm clipping of the trainable gradients; 0 / None = off
  grad_accum      k > 1: `optax.MultiSteps`, one update per k micro-batches (mean gradient)
  freeze          regexes (fullmatch) over '/'-joined parameter paths, e.g. ("trunk/.*",);
                  a string is split on commas. Matching leaves get `optax.set_to_zero`
                  (through `optax.multi_transform`): they stay bit-identical and keep no state.
  train_top_layers  N > 0: only the top N layers of the scanned stack train (see below)
  unfreeze        optional regexes kept trainable despite train_top_layers (e.g. the final norm)
  heads_only_warmup_steps
                  N > 0: for the first N optimizer updates only the leaves outside `trunk/`
                  (the heads) train; the trunk's update is exactly zero, then it trains (below)
  nan_policy      "skip": `optax.apply_if_finite` drops an update whose gradients are not finite
                  and counts it (`skipped_updates(opt_state)`); "stop": no wrapper, the loop
                  calls `check_finite_or_raise` and stops with a clear error.
  momentum        optional, sgd only (default none)

RMSprop equals torch.optim.RMSprop(alpha=0.99, eps=1e-8): eps is added outside the square
root, g / (sqrt(v) + eps) (`optax.rmsprop(..., eps_in_sqrt=False)`), v starts at 0.

train_top_layers: every leaf under `trunk/layers/` stacks the L layers along axis 0
([L, ...], nn.scan), so freezing whole leaves cannot express "top N layers". Instead a row mask
keeps rows [L-N, L) and zeroes rows [0, L-N): it is applied to the gradients first (so clipping
sees only the trainable rows, as in torch where frozen tensors have no gradient) and again to
the final updates (so weight decay and momentum never move a frozen row: those rows stay
bit-identical). The embeddings and the final norm are frozen too; the heads train.

heads_only_warmup_steps N: as torch with the trunk's `requires_grad` off for N steps, built from
optax combinators. Before clipping, `conditionally_transform(masked(set_to_zero))` zeroes the
trunk's gradients while step < N (so the global norm is the heads' alone). The base optimizer is
split (`multi_transform`) into the heads' copy and the trunk's copy inside
`conditionally_mask(..., step >= N)`: zero updates and an untouched inner state (no moments, no
weight decay, no Adam step count) until step N, after which the trunk starts fresh moments, as a
torch parameter does at its first gradient. The trunk's schedule is shifted by N, so both parts
follow the same global learning rate. N counts optimizer updates (after grad_accum); with N = 0
the optimizer (and its state tree) is exactly the one without this option.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

LAYERS_PREFIX = "trunk/layers/"
TRUNK_PREFIX = "trunk/"
_NEVER = 2**31 - 1  # apply_if_finite: never give up and apply a non-finite update


# ----------------------------------------------------------------------------------------------
# parameter paths and freezing


def path_str(path) -> str:
    """A jax key path as 'trunk/layers/attn/q_proj/kernel'."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def param_paths(params) -> Any:
    """The tree of '/'-joined path strings, same structure as params."""
    return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), params)


def _patterns(value, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for v in value:
        v = str(v).strip()
        if not v:
            continue
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"optim.{field}: bad regex {v!r}: {e}") from None
        out.append(v)
    return out


def _check_patterns_match(patterns: Sequence[str], paths: list[str], field: str) -> None:
    for p in patterns:
        if not any(re.fullmatch(p, s) for s in paths):
            raise ValueError(f"optim.{field}: pattern {p!r} matches no parameter path "
                             f"(paths look like {paths[:4]})")


def trainable_labels(cfg, params) -> Any:
    """The tree of "train" / "freeze" labels per leaf (same structure as params)."""
    paths = jax.tree_util.tree_leaves(param_paths(params))
    freeze = _patterns(cfg.get("freeze", ()), "freeze")
    unfreeze = _patterns(cfg.get("unfreeze", ()), "unfreeze")
    _check_patterns_match(freeze, paths, "freeze")
    _check_patterns_match(unfreeze, paths, "unfreeze")
    top = int(cfg.get("train_top_layers", 0) or 0)

    def label(path: str) -> str:
        if any(re.fullmatch(p, path) for p in freeze):
            return "freeze"
        if top > 0 and path.startswith(TRUNK_PREFIX) and not path.startswith(LAYERS_PREFIX):
            if not any(re.fullmatch(p, path) for p in unfreeze):
                return "freeze"
        return "train"

    return jax.tree_util.tree_map(label, param_paths(params))


def _layer_row_mask(n_top: int) -> optax.GradientTransformation:
    """Zeroes rows [0, L-N) of every leaf under trunk/layers/ (leaves are [L, ...])."""

    def update_fn(updates, params=None):
        del params

        def mask(path, u):
            if not path_str(path).startswith(LAYERS_PREFIX):
                return u
            n = u.shape[0]
            keep = (jnp.arange(n) >= n - n_top).reshape((n,) + (1,) * (u.ndim - 1))
            return jnp.where(keep, u, jnp.zeros_like(u))

        return jax.tree_util.tree_map_with_path(mask, updates)

    return optax.stateless(update_fn)


def _check_top_layers(n_top: int, params) -> None:
    rows = {np.shape(x)[0] for p, x in jax.tree_util.tree_leaves_with_path(params)
            if path_str(p).startswith(LAYERS_PREFIX)}
    if not rows:
        raise ValueError(f"optim.train_top_layers={n_top}: no parameter under "
                         f"'{LAYERS_PREFIX}' (the layers must be scanned: [L, ...] leaves)")
    if len(rows) != 1 or n_top > next(iter(rows)):
        raise ValueError(f"optim.train_top_layers={n_top}: the layer stack has "
                         f"{sorted(rows)} layers")


def _trunk_mask(tree) -> Any:
    """True for every leaf under trunk/ (same structure as tree)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: path_str(p).startswith(TRUNK_PREFIX), tree)


def _trunk_or_heads(tree) -> Any:
    return jax.tree_util.tree_map(lambda t: "trunk" if t else "heads", _trunk_mask(tree))


def _check_heads_only_warmup(n: int, cfg, params) -> None:
    if n < 0:
        raise ValueError(f"optim.heads_only_warmup_steps={n} must be >= 0")
    if not n:
        return
    labels = jax.tree_util.tree_leaves(trainable_labels(cfg, params))
    paths = jax.tree_util.tree_leaves(param_paths(params))
    if not any(lab == "train" and not p.startswith(TRUNK_PREFIX)
               for lab, p in zip(labels, paths)):
        raise ValueError(f"optim.heads_only_warmup_steps={n}: no trainable parameter outside "
                         f"'{TRUNK_PREFIX}' (paths look like {paths[:4]}), nothing would train")


def _trunk_grad_gate(n: int) -> optax.GradientTransformation:
    """Zero gradients for the trunk/ leaves while the update count is < n, unchanged after."""
    return optax.transforms.conditionally_transform(
        optax.masked(optax.set_to_zero(), _trunk_mask), lambda step: step < n)


def _heads_then_trunk(cfg, schedule, n: int) -> optax.GradientTransformation:
    """The base optimizer on the heads from step 0 and on the trunk from step n (before that
    its updates are zero and its state untouched); the trunk's schedule is shifted by n."""
    trunk = optax.transforms.conditionally_mask(
        _base_optimizer(cfg, lambda count: schedule(count + n)), lambda step: step >= n)
    return optax.multi_transform({"heads": _base_optimizer(cfg, schedule), "trunk": trunk},
                                 _trunk_or_heads)


# ----------------------------------------------------------------------------------------------
# schedule and base optimizer


def learning_rate_schedule(cfg) -> optax.Schedule:
    """lr * min(1, (step+1)/(W+1)) for step < W, then constant or cosine to 0 at total_steps."""
    lr, warmup = float(cfg.lr), int(cfg.get("warmup_steps", 0) or 0)
    name = cfg.get("schedule", "constant")

    def warm(count):
        return lr * jnp.minimum(1.0, (count + 1.0) / (warmup + 1.0))

    if name == "constant":
        return warm
    if name == "cosine":
        total = int(cfg.get("total_steps", 0) or 0)
        if total <= warmup:
            raise ValueError(f"optim.total_steps={total} must exceed optim.warmup_steps="
                             f"{warmup} for the cosine schedule")
        cosine = optax.cosine_decay_schedule(lr, decay_steps=total - warmup)
        return lambda count: jnp.where(count < warmup, warm(count), cosine(count - warmup))
    raise ValueError(f"optim.schedule={name!r}: expected 'constant' or 'cosine'")


def _base_optimizer(cfg, schedule) -> optax.GradientTransformation:
    name = cfg.get("name", "rmsprop")
    wd = float(cfg.get("weight_decay", 0.0) or 0.0)
    l2 = [optax.add_decayed_weights(wd)] if wd else []  # torch: grad += wd * param
    if name == "rmsprop":
        return optax.chain(*l2, optax.rmsprop(
            schedule, decay=float(cfg.get("rmsprop_decay", 0.99)),
            eps=float(cfg.get("eps", 1e-8)), eps_in_sqrt=False))
    if name == "adamw":
        return optax.adamw(schedule, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                           eps=float(cfg.get("eps", 1e-8)), weight_decay=wd)
    if name == "sgd":
        momentum = cfg.get("momentum", None) or None
        return optax.chain(*l2, optax.sgd(schedule, momentum=momentum))
    raise ValueError(f"optim.name={name!r}: expected 'rmsprop', 'adamw' or 'sgd'")


# ----------------------------------------------------------------------------------------------


def make_optimizer(cfg, params) -> optax.GradientTransformation:
    """The optax transformation for `cfg` (the `optim` config section) and this param tree.

    params: the (unboxed) parameter tree, used to resolve freeze patterns and layer counts;
    the returned transformation works on any tree of the same structure.
    """
    import flax.core.meta

    params = flax.core.meta.unbox(params)
    n_top = int(cfg.get("train_top_layers", 0) or 0)
    if n_top < 0:
        raise ValueError(f"optim.train_top_layers={n_top} must be >= 0")
    if n_top:
        _check_top_layers(n_top, params)
    n_warm = int(cfg.get("heads_only_warmup_steps", 0) or 0)
    _check_heads_only_warmup(n_warm, cfg, params)

    schedule = learning_rate_schedule(cfg)
    clip = cfg.get("clip_norm", 0.0) or 0.0
    parts = []
    if n_top:
        parts.append(_layer_row_mask(n_top))
    if n_warm:
        parts.append(_trunk_grad_gate(n_warm))
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    parts.append(_heads_then_trunk(cfg, schedule, n_warm) if n_warm
                 else _base_optimizer(cfg, schedule))
    if n_top:
        parts.append(_layer_row_mask(n_top))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]

    labels = trainable_labels(cfg, params)
    if "freeze" in jax.tree_util.tree_leaves(labels):
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                   lambda p: trainable_labels(cfg, p))

    k = int(cfg.get("grad_accum", 1) or 1)
    if k < 1:
        raise ValueError(f"optim.grad_accum={k} must be >= 1")
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()

    policy = cfg.get("nan_policy", "skip")
    if policy == "skip":
        tx = optax.apply_if_finite(tx, max_consecutive_errors=_NEVER)
    elif policy != "stop":
        raise ValueError(f"optim.nan_policy={policy!r}: expected 'skip' or 'stop'")
    return tx


def skipped_updates(opt_state) -> jax.Array:
    """[] int32: updates dropped for non-finite gradients (nan_policy='skip'), else 0."""
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        return opt_state.total_notfinite
    return jnp.zeros((), jnp.int32)


def check_finite_or_raise(step: int, metrics: dict) -> None:
    """nan_policy='stop': raise FloatingPointError when the step's loss, gradient norm or
    `finite` flag says the step was not finite. metrics: scalars (host or device)."""
    bad = []
    for key in ("loss", "grad_norm"):
        if key in metrics and not np.all(np.isfinite(np.asarray(jax.device_get(metrics[key])))):
            bad.append(f"{key}={np.asarray(jax.device_get(metrics[key])).tolist()}")
    if "finite" in metrics and not bool(np.asarray(jax.device_get(metrics["finite"]))):
        bad.append("finite=False")
    if bad:
        raise FloatingPointError(
            f"step {step}: non-finite loss or gradients ({', '.join(bad)}) with "
            f"optim.nan_policy='stop'; set it to 'skip' to drop such updates instead")
