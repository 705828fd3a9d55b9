"""Memory benchmarks.

- `inference_case`: latency and memory of a forward pass ([B, T] tokens -> logits [B, T, V])
  with 2 action heads mixed by weights (0.5, 0.5) vs the plain 1-head model. The mixed head is
  sum_i w_i W_i, computed inside the jitted call, so the extra cost is one [K, D, V] weighted sum.
- `param_memory_case`: per-device parameter + optimizer (RMSprop: one float32 `nu` per param)
  memory of a big preset with K heads on a mesh, from abstract shapes only (`jax.eval_shape`;
  nothing is allocated). Parameters are laid out by their logical axis names with the
  training rules `parallel/rules.FSDP_TP_RULES` (FSDP over `fsdp`, tensor parallel over
  `tensor`), the layout `python -m mtalign_jax.dryrun` reports; the optimizer state mirrors
  the parameters' sharding, so its per-device share equals the parameters' share.
- the MAH-DPO step's memory vs K comes from XLA's compiled memory analysis of the step
  (`benchmarks.mahdpo_step.memory_only`), for routed and all-heads variants.
"""
from __future__ import annotations

import math

from benchmarks import peak_rss_mb, reset_peak_rss, rss_mb, timed

def shard_shape(shape, spec, mesh: dict) -> tuple:
    """Per-device shape of an array with PartitionSpec `spec` on a mesh {axis: size}
    (a dimension that does not divide evenly is padded up, as XLA does)."""
    out = []
    for i, n in enumerate(shape):
        axes = spec[i] if i < len(spec) else None
        axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        div = math.prod(mesh.get(a, 1) for a in axes)
        out.append(-(-n // div))
    return tuple(out)


def param_memory_case(spec: dict) -> dict:
    """Per-device and total parameter / optimizer MiB of preset `model` with `heads` heads on
    mesh `mesh` ({"fsdp": 8, "tensor": 1}, ...), float32 parameters."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.mahdpo_step import optimizer
    from mtalign_jax.models.model import CausalLM
    from mtalign_jax.models.presets import get_preset
    from mtalign_jax.parallel.rules import FSDP_TP_RULES

    cfg = get_preset(spec["model"], dtype="float32", param_dtype="float32")
    model = CausalLM(cfg, spec["heads"])
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    specs = nn.get_partition_spec(boxed)["params"]
    with nn.logical_axis_rules(FSDP_TP_RULES):
        mesh_specs = jax.tree_util.tree_map(
            lambda s: nn.logical_to_mesh_axes(tuple(s)), specs,
            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    abstract = nn.unbox(boxed)["params"]
    leaves = jax.tree_util.tree_leaves(abstract)
    spec_leaves = jax.tree_util.tree_leaves(
        mesh_specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    mesh = dict(spec["mesh"])
    total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
    per_dev = sum(int(np.prod(shard_shape(x.shape, s, mesh))) * x.dtype.itemsize
                  for x, s in zip(leaves, spec_leaves))
    opt = jax.eval_shape(optimizer().init, abstract)
    opt_total = sum(int(np.prod(x.shape)) * x.dtype.itemsize
                    for x in jax.tree_util.tree_leaves(opt))
    mb = 1024.0 ** 2
    return {"params": sum(int(np.prod(x.shape)) for x in leaves),
            "devices": math.prod(mesh.values()),
            "param_mb": total / mb, "opt_mb": opt_total / mb,
            "per_device_param_mb": per_dev / mb,
            "per_device_opt_mb": opt_total * (per_dev / total) / mb,
            "per_device_total_mb": (per_dev + opt_total * per_dev / total) / mb}


def inference_case(spec: dict) -> dict:
    """Forward latency / memory of `heads` (1: the plain model; 2: mixed (0.5, 0.5))."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.mahdpo_step import compiled_memory_mb, load_models, release_reference

    cfg, model, params, ref_model, ref_params = load_models(
        spec["model"], 2, head_init_noise=spec["head_init_noise"], seed=spec["seed"])
    ids = jnp.asarray(np.random.default_rng(spec["seed"]).integers(
        0, cfg.vocab_size, (spec["batch"], spec["seq_len"])), jnp.int32)
    if spec["heads"] == 1:
        del params
        fn = jax.jit(lambda p, x: ref_model.apply({"params": p}, x))
        args = (ref_params, ids)
    else:
        del ref_params
        release_reference()
        w = jnp.full((spec["heads"],), 1.0 / spec["heads"], jnp.float32)
        fn = jax.jit(lambda p, x, w: model.apply({"params": p}, x, head_weights=w))
        args = (params, ids, w)
    compiled = fn.lower(*args).compile()
    reset_peak_rss()
    rss0 = rss_mb()
    one = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
    for _ in range(spec["warmup"]):
        one()
    seconds, all_s = timed(one, spec["reps"])
    return dict(compiled_memory_mb(compiled), seconds=seconds, all_seconds=all_s,
                peak_rss_mb=peak_rss_mb(), rss_before_mb=rss0)
