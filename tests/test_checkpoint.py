"""Orbax checkpoints: bit-exact round trip into target shardings (params, optimizer state, step,
RNG keys, iterator state), keep-N, a write killed mid-save, and exported params."""
import os
import signal
import subprocess
import sys
import textwrap

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mtalign_jax import checkpoint as ckpt_lib
from mtalign_jax.training import optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@flax.struct.dataclass
class _State:
    step: jax.Array
    params: dict
    opt_state: object
    rng: jax.Array
    typed_rng: jax.Array


def _params(seed=0):
    r = np.random.RandomState(seed)
    return {"trunk": {"embed": {"embedding": r.normal(size=(16, 8)).astype(np.float32)},
                      "layers": {"mlp": {"up_proj": {"kernel": r.normal(size=(2, 8, 4))
                                                     .astype(np.float32)}}}},
            "heads": {"kernel": r.normal(size=(2, 8, 16)).astype(np.float32)}}


_TX = {}


def _optimizer(params):
    """(jitted init, jitted update) of AdamW + freezing + accumulation + NaN skip (built once)."""
    if not _TX:
        cfg = ml_collections.ConfigDict(dict(name="adamw", lr=0.1, freeze=("trunk/embed/.*",),
                                             clip_norm=1.0, nan_policy="skip", grad_accum=2))
        tx = optim.make_optimizer(cfg, params)
        _TX["fns"] = (jax.jit(tx.init), jax.jit(tx.update))
    return _TX["fns"]


def _state(mesh, seed=0):
    """A sharded train state whose optimizer state has masked (frozen) and counter nodes."""
    specs = {"trunk": {"embed": {"embedding": P("data", "tensor")},
                       "layers": {"mlp": {"up_proj": {"kernel": P(None, "data", "tensor")}}}},
             "heads": {"kernel": P(None, None, "data")}}
    params = jax.tree_util.tree_map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
                                    _params(seed), specs)
    init, update = _optimizer(params)
    grads = jax.tree_util.tree_map(lambda x: jnp.cos(x) + seed, params)
    _, opt_state = update(grads, init(params), params)  # non-trivial moments
    return _State(step=jnp.asarray(7 + seed, jnp.int32), params=params, opt_state=opt_state,
                  rng=jax.random.PRNGKey(11 + seed), typed_rng=jax.random.key(5 + seed))


def _bits(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x)).tobytes()


def _mesh():
    return jax.make_mesh((4, 2), ("data", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def test_round_trip_is_bit_exact_into_target_shardings(tmp_path):
    mesh = _mesh()
    state = _state(mesh)
    it_state = {"next_index": 12, "epoch": 1, "name": "train"}
    ck = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=3)
    assert ck.latest_step() is None and ckpt_lib.latest_step(str(tmp_path / "ckpt")) is None
    assert ck.save(3, state, it_state)
    ck.wait()
    assert ckpt_lib.latest_step(str(tmp_path / "ckpt")) == 3

    target = _state(mesh, seed=1)  # same structure and shardings, different values
    fresh = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=3)
    restored, it = fresh.restore(None, target)
    assert it == it_state
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
    assert isinstance(restored.opt_state, type(state.opt_state))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        assert a.dtype == b.dtype and _bits(a) == _bits(b)
        assert b.sharding == a.sharding
    assert int(optim.skipped_updates(restored.opt_state)) == 0
    # and not just the target's values
    assert _bits(target.params["heads"]["kernel"]) != _bits(restored.params["heads"]["kernel"])

    # abstract target (ShapeDtypeStructs with shardings) and bytes iterator state
    ck.save(4, state, b"\x00grain-state\xff")
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, it = ck.restore(4, abstract)
    assert it == b"\x00grain-state\xff"
    assert _bits(restored.rng) == _bits(state.rng)
    assert restored.params["heads"]["kernel"].sharding.spec == P(None, None, "data")
    with pytest.raises(ValueError, match="abstract_state"):
        ck.restore(4)


def test_keep_n_latest(tmp_path):
    state = {"w": jnp.arange(6.0), "step": jnp.asarray(0)}
    ck = ckpt_lib.Checkpointer(str(tmp_path), keep=2)
    for step in range(1, 6):
        assert ck.save(step, {**state, "step": jnp.asarray(step)}, {"i": step})
    ck.wait()
    assert ck.all_steps() == [4, 5]
    assert ck.save(5, state, {"i": 0}) is False  # an existing step is never overwritten
    restored, it = ck.restore(4, state)
    assert int(restored["step"]) == 4 and it == {"i": 4}


_CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp
    from mtalign_jax import checkpoint as ckpt_lib

    directory = sys.argv[1]
    ck = ckpt_lib.Checkpointer(directory, keep=3)
    ck.save(1, {"w": jnp.full((256, 256), 1.0), "step": jnp.asarray(1)}, {"i": 1})
    real_rename = os.rename

    def slow_rename(src, dst, *a, **k):
        if ckpt_lib.TMP_MARKER in str(src):
            print("COMMITTING", src, flush=True)  # everything written, not yet committed
            time.sleep(120)
        return real_rename(src, dst, *a, **k)

    os.rename = slow_rename
    print("SAVING 2", flush=True)
    ck.save(2, {"w": jnp.full((256, 256), 2.0), "step": jnp.asarray(2)}, {"i": 2})
    print("UNREACHABLE", flush=True)
""")


def test_write_killed_mid_save_leaves_previous_checkpoint_usable(tmp_path):
    directory = str(tmp_path / "ckpt")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, directory], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("COMMITTING"):
                proc.send_signal(signal.SIGKILL)  # killed during the checkpoint write
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert any(l.startswith("COMMITTING") for l in lines), (lines, proc.stderr.read())
    assert proc.returncode == -signal.SIGKILL
    entries = os.listdir(directory)
    assert any(ckpt_lib.TMP_MARKER in e and e.startswith("2") for e in entries), entries
    assert "2" not in entries

    assert ckpt_lib.latest_step(directory) == 1
    ck = ckpt_lib.Checkpointer(directory, keep=3)
    assert ck.latest_step() == 1
    target = {"w": jnp.zeros((256, 256)), "step": jnp.asarray(0)}
    state, it = ck.restore(None, target)
    assert it == {"i": 1} and int(state["step"]) == 1
    np.testing.assert_array_equal(np.asarray(state["w"]), 1.0)
    # the leftover tmp directory is cleaned up and step 2 can be written again
    assert not any(ckpt_lib.TMP_MARKER in e for e in os.listdir(directory))
    assert ck.save(2, {"w": jnp.full((256, 256), 2.0), "step": jnp.asarray(2)}, {"i": 2})
    assert ck.restore(None, target)[1] == {"i": 2}


def test_save_and_load_params(tmp_path):
    params = _params()
    params["heads"]["kernel"] = params["heads"]["kernel"].astype(ml_dtypes.bfloat16)
    meta = {"num_heads": 2, "model_config": {"d_model": 8}, "base_model": "tiny"}
    ckpt_lib.save_params(str(tmp_path / "model"), params, meta)
    loaded, meta2 = ckpt_lib.load_params(str(tmp_path / "model"))
    assert meta2 == meta
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    with pytest.raises(FileNotFoundError, match="meta.json: missing"):
        ckpt_lib.load_params(str(tmp_path))
