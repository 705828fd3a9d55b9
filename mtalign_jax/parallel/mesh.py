"""The device mesh from a config's `mesh` section, and global batches placed on it.

    mesh = make_mesh(config.mesh)          # axes ("data", "fsdp", "tensor"), shape (-1, 1, 1)
    with jax.set_mesh(mesh):
        batch = shard_batch(host_batch, mesh)   # dict of [B, ...] numpy -> global jax.Arrays

Config keys: `axes` (mesh axis names), `shape` (one size per axis; one -1 = the remaining
devices), `devices` (optional: use only the first N devices; 0 = all). All axes are
`AxisType.Auto` (GSPMD propagation with the logical constraints the model carries; jax's
default for `jax.make_mesh` is Explicit, which the Linen model does not use).

`shard_batch` goes through `jax.make_array_from_process_local_data`: each process passes its
own rows (the per-process slice of the global batch) and gets one global array, so the same
code runs on one host and on a pod.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def mesh_shape(shape, n_devices: int, axes=None) -> tuple[int, ...]:
    """Resolve one -1 in `shape` so that prod(shape) == n_devices, with clear errors."""
    shape = [int(s) for s in shape]
    where = f"mesh.shape={tuple(shape)}" + (f" over mesh.axes={tuple(axes)}" if axes else "")
    if shape.count(-1) > 1:
        raise ValueError(f"{where}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{where}: sizes must be positive (or one -1)")
    fixed = math.prod(s for s in shape if s != -1)
    if n_devices % fixed:
        raise ValueError(f"{where}: the product of the fixed sizes ({fixed}) does not divide "
                         f"the {n_devices} devices")
    if -1 in shape:
        shape[shape.index(-1)] = n_devices // fixed
    elif fixed != n_devices:
        raise ValueError(f"{where}: uses {fixed} devices but {n_devices} are available "
                         f"(put -1 on one axis, or set mesh.devices={fixed})")
    return tuple(shape)


def make_mesh(cfg) -> Mesh:
    """A `jax.sharding.Mesh` from cfg.axes / cfg.shape (/ cfg.devices)."""
    axes = tuple(str(a) for a in cfg.axes)
    if len(axes) != len(tuple(cfg.shape)):
        raise ValueError(f"mesh.axes={axes} and mesh.shape={tuple(cfg.shape)} differ in length")
    devices = jax.devices()
    n = int(cfg.get("devices", 0) or 0)
    if n:
        if n > len(devices):
            raise ValueError(f"mesh.devices={n} but only {len(devices)} devices exist")
        devices = devices[:n]
    shape = mesh_shape(cfg.shape, len(devices), axes)
    return jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(axes), devices=devices)


def batch_axes(mesh: Mesh, rules="default") -> tuple[str, ...]:
    """The mesh axes that the logical `batch` axis maps to on this mesh (may be empty)."""
    from mtalign_jax.parallel.rules import resolve_rules

    for name, target in resolve_rules(rules, mesh):
        if name == "batch":
            if target is None:
                return ()
            return (target,) if isinstance(target, str) else tuple(target)
    return ()


def batch_sharding(mesh: Mesh, rules="default") -> NamedSharding:
    """Sharding of [B, ...] arrays: dim 0 over the batch (data-parallel) axes of size > 1."""
    axes = tuple(a for a in batch_axes(mesh, rules) if mesh.shape[a] > 1)
    return NamedSharding(mesh, P(axes if axes else None))


def shard_batch(batch: dict[str, Any], mesh: Mesh, rules="default") -> dict[str, jax.Array]:
    """Host dict of this process's rows ([b, ...] numpy) -> global arrays [b * processes, ...]
    sharded over the batch axes. 0-d entries are replicated (every process passes the same)."""
    sharding = batch_sharding(mesh, rules)
    n_shards = math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))
    out = {}
    for key, value in batch.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            out[key] = jax.make_array_from_process_local_data(NamedSharding(mesh, P()), arr)
            continue
        rows = arr.shape[0] * jax.process_count()
        if rows % n_shards:
            raise ValueError(f"batch field {key!r}: {rows} global rows do not divide over the "
                             f"{n_shards} data-parallel devices (mesh axes "
                             f"{batch_axes(mesh, rules)} of {dict(mesh.shape)})")
        out[key] = jax.make_array_from_process_local_data(sharding, arr)
    return out
