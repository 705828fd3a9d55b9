"""Mesh from config, logical rules, sharded init and the replication check on 8 fake CPU devices."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mtalign_jax.parallel import mesh as mesh_lib
from mtalign_jax.parallel import rules as rules_lib

V, D, F, L, K = 16, 8, 12, 2, 2


def _mesh(axes, shape, devices=0):
    return mesh_lib.make_mesh(ml_collections.ConfigDict(
        {"axes": axes, "shape": shape, "devices": devices}))


def _init(names, std=0.3):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


class _Layer(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (D,))
        up = nn.Dense(F, use_bias=False, kernel_init=_init(("embed", "mlp")), name="up_proj")
        down = nn.Dense(D, use_bias=False, kernel_init=_init(("mlp", "embed")), name="down_proj")
        h = h + down(nn.silu(up(h * scale)))
        return nn.with_logical_constraint(h, ("batch", "length", "embed")), None


class _Heads(nn.Module):
    @nn.compact
    def __call__(self, h):
        kernel = self.param("kernel", _init(("action_heads", "embed", "vocab")), (K, D, V))
        return jnp.einsum("btd,dv->btv", h, kernel[0])


class _Toy(nn.Module):
    """The CausalLM parameter layout in miniature: trunk/{embed,layers (scanned)}, heads."""

    @nn.compact
    def __call__(self, ids):
        emb = nn.Embed(V, D, embedding_init=_init(("vocab", "embed")), name="embed")
        stack = nn.scan(_Layer, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=L, metadata_params={nn.PARTITION_NAME: "layers"})
        h, _ = stack(name="layers")(emb(ids), None)
        return _Heads(name="heads")(h)


def _loss(params, ids):
    logits = _Toy().apply({"params": params}, ids)
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[..., 0])


IDS = np.arange(32, dtype=np.int32).reshape(8, 4) % V
KEY = jax.random.PRNGKey(3)


def _toy_init(k):
    return _Toy().init(k, IDS[:1])["params"]


@pytest.fixture(scope="module")
def plain_params():
    """Unboxed params of a plain single-device init (compiled once per module)."""
    return nn.unbox(jax.jit(_toy_init)(KEY))


_SHARDED = {}


def _sharded_init(axes, shape):
    """rules_lib.sharded_init on a mesh, cached per mesh (each compile costs seconds on CPU)."""
    if (axes, shape) not in _SHARDED:
        mesh = _mesh(axes, shape)
        _SHARDED[axes, shape] = (mesh, *rules_lib.sharded_init(_toy_init, mesh, "default", KEY))
    return _SHARDED[axes, shape]


def test_make_mesh_shapes_and_errors():
    m = _mesh(("data", "tensor"), (4, 2))
    assert dict(m.shape) == {"data": 4, "tensor": 2}
    m = _mesh(("data", "fsdp", "tensor"), (-1, 2, 2))
    assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
    m = _mesh(("data", "fsdp", "tensor"), (-1, 1, 1), devices=4)
    assert m.size == 4 and dict(m.shape)["data"] == 4
    with pytest.raises(ValueError, match=r"fixed sizes \(3\) does not divide the 8 devices"):
        _mesh(("data", "tensor"), (-1, 3))
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        _mesh(("data", "tensor"), (-1, -1))
    with pytest.raises(ValueError, match="uses 4 devices but 8"):
        _mesh(("data", "tensor"), (2, 2))
    with pytest.raises(ValueError, match="differ in length"):
        _mesh(("data", "tensor"), (8,))


def test_rules_adapt_to_mesh_and_fall_back_on_indivisible_dims():
    m = _mesh(("data", "tensor"), (4, 2))
    r = dict(rules_lib.resolve_rules("default", m))
    assert r["batch"] == ("data",) and r["embed"] is None and r["mlp"] == "tensor"
    m3 = _mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    assert rules_lib.mesh_spec(("vocab", "embed"), (16, 8), m3) == P("tensor", "fsdp")
    assert rules_lib.mesh_spec(("vocab", "embed"), (15, 8), m3) == P(None, "fsdp")
    # activations: batch takes fsdp first, so embed stays unsharded there
    assert rules_lib.mesh_spec(("batch", "length", "embed"), (8, 4, 8), m3) == P(("data", "fsdp"))
    # mesh axes of size 1 never appear in a spec (the canonical form jit returns)
    m1 = _mesh(("data", "fsdp", "tensor"), (4, 2, 1))
    assert rules_lib.mesh_spec(("embed", "mlp"), (8, 12), m1) == P("fsdp")
    with pytest.raises(ValueError, match="mesh.rules='fsdp2'"):
        rules_lib.resolve_rules("fsdp2")


EXPECTED_SPECS = {
    (2, 2, 2): {
        "embed/embedding": P("tensor", "fsdp"),
        "layers/scale": P(None, "fsdp"),
        "layers/up_proj/kernel": P(None, "fsdp", "tensor"),
        "layers/down_proj/kernel": P(None, "tensor", "fsdp"),
        "heads/kernel": P(None, "fsdp", "tensor")},
    (4, 2): {
        "embed/embedding": P("tensor"),
        "layers/scale": P(),
        "layers/up_proj/kernel": P(None, None, "tensor"),
        "layers/down_proj/kernel": P(None, "tensor"),
        "heads/kernel": P(None, None, "tensor")},
}
AXES = {(2, 2, 2): ("data", "fsdp", "tensor"), (4, 2): ("data", "tensor")}


def _specs(tree):
    return {jax.tree_util.keystr(p, simple=True, separator="/"): s.spec
            for p, s in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 2)])
def test_param_shardings_follow_logical_names(shape):
    mesh = _mesh(AXES[shape], shape)
    shardings = rules_lib.param_shardings(jax.eval_shape(_toy_init, KEY), mesh, "default")
    assert _specs(shardings) == EXPECTED_SPECS[shape]
    assert all(s.mesh == mesh for s in jax.tree_util.tree_leaves(shardings))


def test_sharded_init_places_leaves_and_matches_plain_init(plain_params):
    # one mesh only: each sharded init compiles the random initialisers again (seconds on CPU)
    mesh, params, shardings = _sharded_init(AXES[(2, 2, 2)], (2, 2, 2))
    assert _specs(jax.tree_util.tree_map(lambda x: x.sharding, params)) == \
        EXPECTED_SPECS[(2, 2, 2)]
    for x, s in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(shardings)):
        assert x.sharding == s
    for a, b in zip(jax.tree_util.tree_leaves(plain_params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(np.std(np.asarray(params["heads"]["kernel"]))) > 0.1  # really initialised


@pytest.mark.parametrize("axes,shape", [(("data", "tensor"), (4, 2)),
                                        (("data", "fsdp", "tensor"), (2, 2, 2))])
def test_sharded_step_equals_single_device(axes, shape, plain_params):
    params = plain_params

    def sgd(p, ids):
        loss, g = jax.value_and_grad(_loss)(p, ids)
        return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), loss, g

    p1, loss1, g1 = jax.jit(sgd)(params, IDS)

    mesh = _mesh(axes, shape)
    rules = rules_lib.resolve_rules("default", mesh)
    shardings = rules_lib.param_shardings(jax.eval_shape(_toy_init, KEY), mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        ps = jax.device_put(jax.tree_util.tree_map(np.asarray, params), shardings)  # donated copy
        batch = mesh_lib.shard_batch({"ids": IDS}, mesh)
        step = jax.jit(sgd, in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
                       out_shardings=(shardings, None, shardings), donate_argnums=(0,))
        p8, loss8, g8 = step(ps, batch["ids"])
    assert abs(float(loss1) - float(loss8)) < 1e-5
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g8)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    for x, s in zip(jax.tree_util.tree_leaves(p8), jax.tree_util.tree_leaves(shardings)):
        assert x.sharding == s  # the state keeps its shardings after the step
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p8)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert float(loss1) > 0.1


def test_shard_batch_places_rows_over_data_axes():
    mesh = _mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    host = {"input_ids": IDS, "head_ids": np.arange(8, dtype=np.int32),
            "scale": np.float32(2.0)}
    out = mesh_lib.shard_batch(host, mesh)
    assert out["input_ids"].sharding.spec == P(("data", "fsdp"))
    assert out["input_ids"].sharding.shard_shape((8, 4)) == (2, 4)
    np.testing.assert_array_equal(np.asarray(out["input_ids"]), IDS)
    np.testing.assert_array_equal(np.asarray(out["head_ids"]), np.arange(8))
    assert out["scale"].sharding.is_fully_replicated and float(out["scale"]) == 2.0
    with pytest.raises(ValueError, match="'input_ids': 6 global rows do not divide over the 4"):
        mesh_lib.shard_batch({"input_ids": IDS[:6]}, mesh)


def test_large_leaf_check_flags_replicated_and_passes_sharded():
    mesh, params, _ = _sharded_init(("data", "fsdp", "tensor"), (2, 2, 2))
    params = dict(params)
    rules_lib.check_all_large_sharded(params, mesh, threshold_bytes=64)  # all sharded: passes

    params["big"] = jax.device_put(jnp.zeros((64, 64)), NamedSharding(mesh, P()))
    with pytest.raises(ValueError, match=r"(?s)1 parameter leaves.*big \(64, 64\) float32"):
        rules_lib.check_all_large_sharded(params, mesh, threshold_bytes=64)
    rules_lib.check_all_large_sharded(params, mesh, threshold_bytes=64 * 64 * 4)  # under it

    # on abstract (boxed) params with the data-parallel rules: everything large is flagged
    abstract = jax.eval_shape(_toy_init, KEY)
    dp = rules_lib.param_shardings(abstract, mesh, "data_parallel")
    with pytest.raises(ValueError, match=r"(?s)5 parameter leaves.*layers/up_proj/kernel"):
        rules_lib.check_all_large_sharded(abstract, threshold_bytes=16, shardings=dp)
    one = _mesh(("data",), (1,), devices=1)
    rules_lib.check_all_large_sharded(
        abstract, threshold_bytes=16, shardings=rules_lib.param_shardings(abstract, one))
