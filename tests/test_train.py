"""Training system on the tiny model: sharded == single device, learning, freezing, NaN policy."""
import json
import os

import jax
import numpy as np
import pytest

from mtalign_jax.parallel import mesh as mesh_lib
from mtalign_jax.training import tasks
from mtalign_jax.training.loop import run


def _config(name, variant="tiny", **over):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(variant)
    for k, v in over.items():
        node = c
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


def _one_step(config, tmp_path):
    task = tasks.get_task(config)
    data = task.load_data(str(tmp_path))
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        built = task.build(data, mesh, str(tmp_path))
        before = jax.tree_util.tree_map(lambda x: x.sharding, built.state.params)
        batch = built.next_batch(built.train_iter)
        batch.pop("_tokens")
        state, metrics = jax.jit(built.step, donate_argnums=(0,))(
            built.state, built.place(batch), jax.random.PRNGKey(0))
        after = jax.tree_util.tree_map(lambda x: x.sharding, state.params)
        return float(metrics["loss"]), before, after, jax.device_get(state.params)


@pytest.mark.parametrize("name", ["sft", "mahdpo_math"])
def test_sharded_step_equals_single_device(tmp_path, name):
    single = _config(name, **{"mesh.shape": (1, 1, 1), "mesh.devices": 1})
    sharded = _config(name, **{"mesh.shape": (4, 2, 1)})
    l1, _, _, p1 = _one_step(single, tmp_path / "a")
    l8, before, after, p8 = _one_step(sharded, tmp_path / "b")
    assert abs(l1 - l8) < 1e-5, (l1, l8)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a == b, before, after))
    assert any(len(s.device_set) > 1 for s in jax.tree_util.tree_leaves(before))
    # (Parameters after one RMSprop step are not compared elementwise: its first update is
    # ~lr * sign(g), which turns reduction-order rounding of near-zero gradients into lr-sized
    # differences. The loss above and the forward/backward tests cover the numerics.)


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        recs = [json.loads(l) for l in f]
    return [r["loss"] for r in recs if "loss" in r]


def test_sft_overfits_and_frozen_trunk_stays_bit_identical(tmp_path):
    c = _config("sft", **{"total_steps": 40, "eval_every": 0, "checkpoint_every": 40,
                          "data.synthetic": 16, "data.batch_size": 8})
    run(c, str(tmp_path / "free"))
    losses = _losses(tmp_path / "free")
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses

    c = _config("sft", **{"total_steps": 5, "eval_every": 0, "checkpoint_every": 5,
                          "optim.freeze": ("trunk/.*",)})
    from mtalign_jax.checkpoint import load_params
    from mtalign_jax.hf.load import load_pretrained

    run(c, str(tmp_path / "frozen"))
    _, init, _ = load_pretrained("tiny", seed=c.model.head_seed)
    trained, _ = load_params(str(tmp_path / "frozen" / "model"))
    for a, b in zip(jax.tree_util.tree_leaves(init["trunk"]),
                    jax.tree_util.tree_leaves(trained["trunk"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(init["heads"]["kernel"]),
                              np.asarray(trained["heads"]["kernel"]))


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nan_in_batch_is_skipped_or_stops(tmp_path, policy):
    """debug_nan_step poisons one batch's float inputs (reference log-probs) with NaN."""
    c = _config("mahdpo_math", **{"total_steps": 4, "eval_every": 0, "checkpoint_every": 2,
                                  "nan_policy": policy, "debug_nan_step": 3})
    workdir = tmp_path / policy
    if policy == "stop":
        with pytest.raises(FloatingPointError, match="step 3"):
            run(c, str(workdir))
        # the last good checkpoint (step 2) is intact and loadable
        from mtalign_jax.checkpoint import Checkpointer

        assert Checkpointer(str(workdir / "checkpoints"), keep=2).latest_step() == 2
        return
    run(c, str(workdir))
    with open(workdir / "metrics.jsonl") as f:
        recs = {r["step"]: r for r in map(json.loads, f) if "loss" in r}
    assert recs[3]["finite"] is False and recs[3]["skipped"] == 1
    assert recs[4]["finite"] is True and np.isfinite(recs[4]["loss"])
    from mtalign_jax.checkpoint import load_params

    params, _ = load_params(str(workdir / "model"))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params))
