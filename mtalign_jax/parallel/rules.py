"""Logical -> mesh axis rules, parameter shardings, sharded init, and the replication check.

The model names logical axes only (docs/ARCHITECTURE.md): parameters `vocab, embed, q_heads,
kv_heads, mlp, layers, action_heads`; activations `batch, length, embed`. A rule set is a
tuple of (logical name, mesh axis | tuple of mesh axes | None), in priority order (Flax
assigns each mesh axis at most once per array, first rule first):

    FSDP_TP_RULES   batch -> (data, fsdp); embed -> fsdp; vocab/q_heads/kv_heads/mlp -> tensor
    DATA_PARALLEL_RULES   batch -> (data, fsdp); every parameter replicated

`resolve_rules(name_or_rules, mesh)` drops mesh axes the mesh does not have, so one rule set
serves meshes such as ("data",), ("data", "tensor") and ("data", "fsdp", "tensor"). Use the
result both for parameters (`param_shardings`) and for the model's activation constraints
(`with nn.logical_axis_rules(rules): ...` around the traced step).

    abstract = jax.eval_shape(model.init, key, ids)["params"]    # boxed nn.LogicallyPartitioned
    shardings = param_shardings(abstract, mesh, "default")        # NamedSharding per param leaf
    params, shardings = sharded_init(lambda k: model.init(k, ids)["params"], mesh, "default", key)
    check_all_large_sharded(params, mesh)                        # raises on silent replication

Specs never name mesh axes of size 1 (so they compare equal to what jit returns). A dimension
that a mapped mesh axis does not divide falls back to fewer axes (replicated along
the dropped ones); `check_all_large_sharded` then flags it if the leaf is large.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = tuple  # tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Activation rules first: for h [batch, length, embed] the batch rule takes fsdp, so embed
# (mapped to fsdp too) stays unsharded there; on parameters embed gets fsdp.
FSDP_TP_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("action_heads", None),
)

DATA_PARALLEL_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", None),
    ("embed", None),
    ("q_heads", None),
    ("kv_heads", None),
    ("mlp", None),
    ("layers", None),
    ("action_heads", None),
)

NAMED_RULES = {"default": FSDP_TP_RULES, "fsdp_tp": FSDP_TP_RULES,
               "data_parallel": DATA_PARALLEL_RULES}


def resolve_rules(spec: Union[str, Sequence], mesh: Optional[Mesh] = None) -> Rules:
    """A rule name (`default`, `fsdp_tp`, `data_parallel`) or an explicit tuple of pairs ->
    a tuple of pairs; with a mesh, mesh axes it does not have are dropped."""
    if isinstance(spec, str):
        if spec not in NAMED_RULES:
            raise ValueError(f"mesh.rules={spec!r}: expected one of {sorted(NAMED_RULES)} or a "
                             f"tuple of (logical, mesh axis) pairs")
        rules = NAMED_RULES[spec]
    else:
        rules = []
        for pair in spec:
            if len(pair) != 2 or not isinstance(pair[0], str):
                raise ValueError(f"mesh.rules: bad rule {pair!r}; expected (logical, mesh axis)")
            target = pair[1]
            rules.append((pair[0], tuple(target) if isinstance(target, (list, tuple)) else target))
        rules = tuple(rules)
    if mesh is None:
        return rules
    names = set(mesh.axis_names)
    out = []
    for logical, target in rules:
        if isinstance(target, tuple):
            kept = tuple(a for a in target if a in names)
            target = kept if kept else None
        elif target is not None and target not in names:
            target = None
        out.append((logical, target))
    return tuple(out)


def unbox(tree):
    """Strip nn.LogicallyPartitioned boxes (arrays or ShapeDtypeStructs stay)."""
    return nn.unbox(tree)


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def logical_specs(boxed_tree) -> Any:
    """The logical PartitionSpec of every boxed leaf (PartitionSpec() for unboxed arrays)."""
    return nn.get_partition_spec(boxed_tree)


def _fit_to_shape(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Canonical spec for this shape: mesh axes of size 1 are dropped (the same sharding, and
    the form jit gives its outputs), then trailing axes of a dim until they divide it."""
    dims = []
    for i, entry in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
        axes = tuple(a for a in axes if mesh.shape[a] > 1)
        while axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
            axes = axes[:-1]
        dims.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
    while dims and dims[-1] is None:
        dims.pop()
    return P(*dims)


def mesh_spec(logical: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
              rules="default") -> P:
    """Mesh PartitionSpec of one array from its logical axis names and shape."""
    spec = nn.logical_to_mesh_axes(tuple(logical), resolve_rules(rules, mesh))
    return _fit_to_shape(spec, shape, mesh)


def param_shardings(abstract_params, mesh: Mesh, rules="default") -> Any:
    """NamedSharding per leaf of a (boxed) abstract param tree; the result has the structure
    of the UNBOXED tree. Leaves without logical names are replicated."""
    resolved = resolve_rules(rules, mesh)

    def one(x):
        if _is_box(x):
            shape = np.shape(x.value)
            spec = nn.logical_to_mesh_axes(tuple(x.names), resolved)
            return NamedSharding(mesh, _fit_to_shape(spec, shape, mesh))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map(one, abstract_params, is_leaf=_is_box)


def params_shardings_for(model, mesh: Mesh, rules="default", seq_len: int = 8) -> Any:
    """Param shardings of a Linen model called as `model.init(key, input_ids [1, T])`."""
    import jax.numpy as jnp

    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                              jnp.zeros((1, seq_len), jnp.int32))
    return param_shardings(abstract["params"], mesh, rules)


def sharded_init(init_fn, mesh: Mesh, rules, *args) -> tuple[Any, Any]:
    """(unboxed tree, shardings): `init_fn(*args)` jitted with out_shardings from the logical
    names of its abstract (boxed) output, so no leaf is ever materialised replicated."""
    abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(resolve_rules(rules, mesh)):
        out = jax.jit(lambda *a: unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return out, shardings


def _nbytes(x) -> int:
    return int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize


def check_all_large_sharded(tree, mesh: Optional[Mesh] = None, threshold_bytes: int = 1 << 20,
                            shardings=None) -> None:
    """Raise ValueError listing every leaf over `threshold_bytes` that is fully replicated
    while the mesh has more than one device (no silent replication on pods).

    tree: arrays with `.sharding`, ShapeDtypeStructs, or boxed abstract params; `shardings`
    (same structure, unboxed) overrides the leaves' own shardings; `mesh` is taken from the
    shardings when not given.
    """
    tree = unbox(tree)
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if shardings is None:
        shards = [getattr(x, "sharding", None) for _, x in leaves]
    else:
        shards = jax.tree_util.tree_leaves(shardings)
        if len(shards) != len(leaves):
            raise ValueError(f"shardings has {len(shards)} leaves, the tree {len(leaves)}")
    if mesh is None:
        meshes = [s.mesh for s in shards if isinstance(s, NamedSharding)]
        mesh = meshes[0] if meshes else None
    n_devices = mesh.size if mesh is not None else max(
        (len(s.device_set) for s in shards if s is not None), default=1)
    if n_devices <= 1:
        return
    bad = []
    for (path, x), s in zip(leaves, shards):
        if _nbytes(x) <= threshold_bytes:
            continue
        if s is None or s.is_fully_replicated:
            name = jax.tree_util.keystr(tuple(path), simple=True, separator="/")
            bad.append(f"  {name} {tuple(np.shape(x))} {np.dtype(x.dtype).name} "
                       f"({_nbytes(x) / 2**20:.1f} MiB)")
    if bad:
        shape = dict(mesh.shape) if mesh is not None else n_devices
        raise ValueError(
            f"{len(bad)} parameter leaves above {threshold_bytes} bytes are fully replicated on "
            f"the mesh {shape}; add a rule for their logical axes (mesh.rules) or make their "
            f"dims divisible by the mapped mesh axes:\n" + "\n".join(bad))
