"""Check a pod layout without a pod: the sharded abstract train state on fake CPU devices.

    python -m mtalign_jax.dryrun --config configs/mahdpo_math.py:paper --devices 64
    python -m mtalign_jax.dryrun --config configs/mahdpo_hv.py:paper --devices 64 \
        --config.mesh.shape="(1,16,4)"

Builds the mesh of `config.mesh` over N simulated devices, the model's abstract parameters
(`jax.eval_shape`, nothing is allocated), their shardings from the logical rules, and the
optimizer state's abstract shapes; prints per-device parameter, optimizer and activation
memory, and fails when a large leaf would be silently replicated.
"""
from __future__ import annotations

import os
import sys


def _devices_from_argv(argv) -> int:
    for i, a in enumerate(argv):
        if a.startswith("--devices="):
            return int(a.split("=", 1)[1])
        if a == "--devices" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 8


# Fake devices must be configured before JAX is imported.
if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count="
                               f"{_devices_from_argv(sys.argv)}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:variant].")
flags.DEFINE_integer("devices", 8, "Number of simulated devices.")
flags.DEFINE_integer("threshold_mib", 1, "Leaves above this size must be sharded.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def _bytes_per_device(tree, shardings) -> float:
    import jax
    import numpy as np

    total = 0.0
    for x, s in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings)):
        shard = s.shard_shape(x.shape) if hasattr(s, "shard_shape") else x.shape
        total += float(np.prod(shard)) * np.dtype(x.dtype).itemsize
    return total


def report(config) -> dict:
    """Per-device memory (bytes) of params, optimizer state and one step's activations."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.models import CausalLM, get_preset
    from mtalign_jax.parallel import mesh as mesh_lib
    from mtalign_jax.parallel import rules as rules_lib
    from mtalign_jax.training.optim import make_optimizer

    mesh = mesh_lib.make_mesh(config.mesh)
    m = config.model
    cfg = get_preset(m.name, dtype=m.dtype, remat=m.remat)
    model = CausalLM(cfg, int(m.num_heads))
    shardings = rules_lib.params_shardings_for(model, mesh, config.mesh.rules)
    abstract = rules_lib.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                              jnp.zeros((1, 8), jnp.int32))["params"])
    rules_lib.check_all_large_sharded(abstract, mesh, FLAGS.threshold_mib << 20,
                                      shardings=shardings)
    tx = make_optimizer(config.optim, abstract)
    opt_abstract = jax.eval_shape(tx.init, abstract)
    # Optimizer leaves shaped like a parameter share its sharding; scalars are replicated.
    by_shape = {(x.shape, x.dtype): s for x, s in zip(jax.tree_util.tree_leaves(abstract),
                                                      jax.tree_util.tree_leaves(shardings))}
    from jax.sharding import NamedSharding, PartitionSpec

    rep = NamedSharding(mesh, PartitionSpec())
    opt_shardings = jax.tree_util.tree_map(
        lambda x: by_shape.get((x.shape, x.dtype), rep), opt_abstract)
    params_b = _bytes_per_device(abstract, shardings)
    opt_b = _bytes_per_device(opt_abstract, opt_shardings)
    # Activations kept for the backward pass of one step: with remat, the residual stream at
    # every layer boundary; without, ~ (attention + MLP intermediates) per layer.
    data_par = 1
    for a in mesh_lib.batch_axes(mesh, config.mesh.rules):
        data_par *= mesh.shape[a]
    rows = 2 * config.data.batch_size if config.task in ("mahdpo", "dpo") else config.data.batch_size
    rows_per_dev = max(1, -(-rows // data_par))
    t, d = config.data.max_len, cfg.d_model
    itemsize = jnp.dtype(cfg.dtype).itemsize
    per_layer = (d if cfg.remat else (4 * d + 2 * cfg.d_ff + cfg.n_heads * t)) * t * itemsize
    act_b = rows_per_dev * cfg.n_layers * per_layer
    return {"mesh": dict(mesh.shape), "params_per_device": params_b,
            "optimizer_per_device": opt_b, "activations_per_device": act_b,
            "total_params": sum(x.size for x in jax.tree_util.tree_leaves(abstract))}


def main(argv):
    del argv
    import jax

    if jax.device_count() != FLAGS.devices:
        raise SystemExit(f"expected {FLAGS.devices} devices, JAX sees {jax.device_count()} "
                         f"(run as `python -m mtalign_jax.dryrun`)")
    r = report(_CONFIG.value)
    gib = 2 ** 30
    print(f"mesh {r['mesh']} ({FLAGS.devices} devices); {r['total_params'] / 1e9:.2f}B params")
    print(f"per device: params {r['params_per_device'] / gib:.2f} GiB, optimizer "
          f"{r['optimizer_per_device'] / gib:.2f} GiB, activations ~"
          f"{r['activations_per_device'] / gib:.2f} GiB")
    print("every parameter leaf above the threshold is sharded")


if __name__ == "__main__":
    sys.exit(app.run(main))
