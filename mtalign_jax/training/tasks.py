"""Task glue: which data, which model state and which pure step each config.task uses.

A task validates its data (`load_data`, before anything else), then `build`s a `Built`
(sharded state, jitted-ready step/eval functions, data iterator, host batch preparation).
The loop (`training/loop.py`) is the same for every task.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.training.state import TrainState


# ----------------------------------------------------------------------------------------------
# host-side batch preparation


def response_view(labels: np.ndarray, bucket: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Compact the response positions of right-padded causal batches.

    labels [B, T] (-100 = not scored). Position t predicts labels[:, t+1], so the scored
    positions are t with labels[b, t+1] != -100. Returns (resp_idx [B, R], resp_labels [B, R])
    with R = the batch's longest response rounded up to a multiple of `bucket` (few static
    shapes, so few compiles); padding entries have index 0 and label -100. Nothing is dropped.
    """
    nxt = labels[:, 1:]
    valid = nxt != -100
    n = int(valid.sum(axis=1).max()) if labels.size else 0
    r = max(bucket, -(-n // bucket) * bucket)
    b = labels.shape[0]
    idx = np.zeros((b, r), np.int32)
    lab = np.full((b, r), -100, np.int32)
    for i in range(b):
        pos = np.nonzero(valid[i])[0]
        idx[i, : len(pos)] = pos
        lab[i, : len(pos)] = nxt[i, pos]
    return idx, lab


def prepare_batch(batch: dict) -> dict:
    """Adds resp_idx / resp_labels and a token count (`_tokens`, host only)."""
    out = {k: np.asarray(v) for k, v in batch.items()}
    out["resp_idx"], out["resp_labels"] = response_view(out["labels"])
    out["_tokens"] = int(np.sum(out["attention_mask"]))
    return out


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Built:
    state: TrainState
    step: Callable
    evaluate: Callable
    train_iter: Any
    next_batch: Callable[[Any], dict]
    place: Callable[[dict], dict]
    run_eval: Callable[[Callable, Any], dict]
    finish: Callable[[TrainState, str], None] = lambda state, workdir: None


def _objectives(config) -> list[str]:
    return [o.strip() for o in str(config.data.objectives).split(",") if o.strip()]


def load_model(config):
    """(model, params, tokenizer) per config.model (K heads, noise, head seed)."""
    from mtalign_jax.hf.load import load_pretrained

    m = config.model
    model, params, tok = load_pretrained(m.name, num_heads=m.num_heads,
                                         head_init_noise=m.head_init_noise, seed=m.head_seed,
                                         dtype=m.dtype)
    if m.remat:
        model = model.clone(cfg=model.cfg.replace(remat=True))
    return model, params, tok


def make_state(config, model, params, mesh) -> tuple[TrainState, Any, Any]:
    """Sharded TrainState (params placed per the logical rules), the optimizer, shardings."""
    from mtalign_jax.parallel import rules as rules_lib
    from mtalign_jax.training.optim import make_optimizer

    shardings = rules_lib.params_shardings_for(model, mesh, config.mesh.rules)
    params = jax.tree_util.tree_map(lambda x, s: jax.device_put(x, s), params, shardings)
    tx = make_optimizer(config.optim, params)
    opt_state = jax.jit(tx.init)(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                       rng=jax.random.PRNGKey(config.seed), skipped=jnp.zeros((), jnp.int32))
    return state, tx, shardings


def make_placer(mesh, rules="default"):
    """Host batch -> global arrays on the mesh.

    Every process builds the same global batch (so a multi-process run sees exactly the batches
    of a 1-process run) and contributes the contiguous rows its devices own through
    `jax.make_array_from_process_local_data`. Fields whose leading size does not divide over the
    data-parallel devices (e.g. per-pair reference log-probs [P]) are replicated.
    """
    import math

    from jax.sharding import NamedSharding, PartitionSpec

    from mtalign_jax.parallel import mesh as mesh_lib

    sharding = mesh_lib.batch_sharding(mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    n_shards = math.prod(mesh.shape[a] for a in mesh_lib.batch_axes(mesh, rules))
    pc, pi = jax.process_count(), jax.process_index()

    def place(batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            if k.startswith("_"):
                continue
            arr = np.asarray(v)
            if arr.ndim == 0 or arr.shape[0] % max(n_shards, pc):
                out[k] = jax.make_array_from_process_local_data(replicated, arr, arr.shape)
            else:
                rows = arr.shape[0] // pc
                out[k] = jax.make_array_from_process_local_data(
                    sharding, arr[pi * rows:(pi + 1) * rows], arr.shape)
        return out
    return place


def eval_runner(batches: list[dict], place: Callable) -> Callable:
    """Mean of the eval metrics over a fixed list of prepared eval batches."""
    def run_eval(eval_fn, params) -> dict:
        if not batches:
            return {}
        acc: dict[str, list] = {}
        for b in batches:
            m = jax.device_get(eval_fn(params, place(b)))
            for k, v in m.items():
                acc.setdefault(k, []).append(np.asarray(v, np.float64))
        return {k: float(np.mean(v)) for k, v in acc.items()}
    return run_eval


def get_task(config):
    from mtalign_jax.training import (task_modpo, task_preference, task_reward,
                                      task_scalarized, task_sft)

    registry = {
        "sft": task_sft.SFTTask,
        "mahdpo": task_preference.PreferenceTask,
        "dpo": task_preference.PreferenceTask,
        "modpo": task_modpo.ModpoTask,
        "scalarized": task_scalarized.ScalarizedTask,
    }
    registry.update({k: task_reward.RewardTask for k in task_reward.KINDS})
    if config.task not in registry:
        raise ValueError(f"unknown task {config.task!r}; known: {', '.join(sorted(registry))}")
    return registry[config.task](config)
