"""Checkpoints: orbax train-state checkpoints for resume, and plain exported parameters.

Resume checkpoints (`Checkpointer`, one orbax `CheckpointManager` under `directory`):

    ckpt = Checkpointer(workdir + "/checkpoints", keep=2)
    ckpt.save(step, state, iterator_state)            # state: any pytree of arrays (TrainState)
    step = ckpt.latest_step()                          # None when there is none
    state, iterator_state = ckpt.restore(step, abstract_state)

Each step directory holds the items `state` (params, optimizer state, step, RNG key: any
pytree; typed PRNG keys are stored as their key data) and `iterator` (the data iterator's state
as JSON: a grain iterator's `get_state()` dict; bytes are stored base64). `restore` reads the
arrays straight into the shardings of `abstract_state` (arrays or `jax.ShapeDtypeStruct`s with
`.sharding`), so a sharded state is never gathered on one device.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it to `<step>`
only once everything is written; an interrupted write (a kill at any moment) leaves a tmp
directory that `latest_step`/`restore` ignore and the next `Checkpointer` deletes, so the
previous checkpoint stays usable. Saving is synchronous by default (`async_save=True`
overlaps the write with training; call `wait()` before exiting). `keep` newest steps are kept.

Exported parameters (`save_params` / `load_params`): `params.safetensors` (keys are the
'/'-joined parameter paths, e.g. `trunk/layers/attn/q_proj/kernel`) plus `meta.json`, written
last, so a directory with `meta.json` is complete. Loaders read our own workdirs with these.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional

import jax
import numpy as np

TMP_MARKER = ".orbax-checkpoint-tmp"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(x):
    """PRNG implementation of a typed key array or of its ShapeDtypeStruct."""
    return jax.random.key_impl(x) if isinstance(x, jax.Array) else x.dtype._impl


def _encode_iterator_state(state) -> dict:
    if state is None:
        return {"kind": "none"}
    if isinstance(state, (bytes, bytearray)):
        return {"kind": "bytes", "value": base64.b64encode(bytes(state)).decode("ascii")}
    return {"kind": "json", "value": state}


def _decode_iterator_state(item: dict):
    kind = item.get("kind")
    if kind == "none":
        return None
    if kind == "bytes":
        return base64.b64decode(item["value"])
    if kind == "json":
        return item["value"]
    raise ValueError(f"checkpoint iterator item: unknown kind {kind!r}")


def _abstract(x):
    """ShapeDtypeStruct with the leaf's sharding (typed keys: of their uint32 key data)."""
    if _is_key(x):
        data = jax.eval_shape(jax.random.key_data, x)
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    sharding = getattr(x, "sharding", None)
    if sharding is None:  # host values: restore onto the first local device
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


class Checkpointer:
    """Save / restore (state, iterator state) per step with orbax; see the module docstring."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = False):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep) if keep else None, create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "iterator"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state, iterator_state=None, metrics: Optional[dict] = None) -> bool:
        """Write step `step` (False, nothing written, when that step already exists).

        metrics: optional scalars stored with the step (orbax's per-step metrics)."""
        ocp = self._ocp
        if int(step) in self.manager.all_steps():
            return False
        state = jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                                       state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            iterator=ocp.args.JsonSave(_encode_iterator_state(iterator_state)))
        if metrics is not None:
            metrics = {k: float(np.asarray(jax.device_get(v))) for k, v in metrics.items()}
        return bool(self.manager.save(int(step), args=args, metrics=metrics, force=True))

    def restore(self, step: Optional[int] = None, abstract_state=None) -> tuple[Any, Any]:
        """(state, iterator_state) of `step` (default: the latest), placed with the shardings
        of `abstract_state` (same pytree as saved; arrays or ShapeDtypeStructs)."""
        ocp = self._ocp
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        if abstract_state is None:
            raise ValueError("restore needs abstract_state (the state pytree or its "
                             "ShapeDtypeStructs with target shardings)")
        target = jax.tree_util.tree_map(_abstract, abstract_state)
        out = self.manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), iterator=ocp.args.JsonRestore()))
        state = jax.tree_util.tree_map(
            lambda a, x: jax.random.wrap_key_data(x, impl=_key_impl(a))
            if _is_key(a) else x, abstract_state, out["state"])
        return state, _decode_iterator_state(out["iterator"])

    def wait(self) -> None:
        """Block until an asynchronous save has finished (no-op when saving synchronously)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def latest_step(directory: str) -> Optional[int]:
    """Latest finished checkpoint step under `directory` (None when there is none)."""
    if not os.path.isdir(directory):
        return None
    import orbax.checkpoint as ocp

    steps = ocp.utils.checkpoint_steps(directory)  # ignores unfinished tmp directories
    return max(steps) if steps else None


# ----------------------------------------------------------------------------------------------
# exported parameters


def _flatten(params) -> dict[str, np.ndarray]:
    flat = {}
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        keys = []
        for k in path:
            if not isinstance(k, jax.tree_util.DictKey):
                raise TypeError(f"save_params: params must be nested dicts, found {k!r}")
            if "/" in str(k.key):
                raise ValueError(f"save_params: key {k.key!r} contains '/'")
            keys.append(str(k.key))
        flat["/".join(keys)] = np.asarray(jax.device_get(x))
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_params(directory: str, params, meta: Optional[dict] = None) -> None:
    """Write `params` (nested dicts of arrays, fully addressable) and `meta` (JSON) to
    directory/params.safetensors and directory/meta.json (meta last: its presence marks a
    complete directory)."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    meta_path = os.path.join(directory, "meta.json")
    if os.path.exists(meta_path):
        os.remove(meta_path)  # incomplete until the new meta.json lands
    tensors = os.path.join(directory, "params.safetensors")
    save_file(_flatten(params), tensors + ".tmp")
    os.replace(tensors + ".tmp", tensors)
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta or {}, f, indent=2, sort_keys=True)
    os.replace(meta_path + ".tmp", meta_path)


def load_params(directory: str) -> tuple[dict, dict]:
    """(params as nested dicts of numpy arrays, meta) written by `save_params`."""
    from safetensors.numpy import load_file

    meta_path = os.path.join(directory, "meta.json")
    tensors = os.path.join(directory, "params.safetensors")
    for p in (meta_path, tensors):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: missing (not a directory written by save_params)")
    with open(meta_path) as f:
        meta = json.load(f)
    return _unflatten(load_file(tensors)), meta
