"""MAH-DPO step semantics on the tiny model: routing, gradient flow, log 2 at init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtalign_jax
from mtalign_jax.losses import preference_loss
from mtalign_jax.training.steps import preference_loss_fn, response_logps
from mtalign_jax.training.tasks import response_view


def _batch(pairs=4, t=24, seed=0, objective_ids=(0, 1, 0, 1)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 256, size=(2 * pairs, t)).astype(np.int32)
    labels = ids.copy()
    labels[:, :10] = -100  # prompt
    lengths = rng.integers(16, t + 1, size=2 * pairs)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    labels[mask == 0] = -100
    b = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    b["resp_idx"], b["resp_labels"] = response_view(labels)
    b["objective_ids"] = np.array(list(objective_ids) * 2, np.int32)
    return b


@pytest.fixture(scope="module")
def tiny2():
    return mtalign_jax.load_pretrained("tiny", num_heads=2, head_init_noise=0.0, seed=1)


def test_dpo_loss_is_log2_when_policy_equals_reference(tiny2):
    model, params, _ = tiny2
    b = _batch()
    lp = response_logps(model, params, b)
    b["ref_chosen"], b["ref_rejected"] = lp[:4], lp[4:]
    loss, m = preference_loss_fn(model, params, b, objectives=["a", "b"], beta=0.1)
    np.testing.assert_allclose(loss, np.log(2.0), atol=1e-6)
    np.testing.assert_allclose(m["loss/a"], np.log(2.0), atol=1e-6)


def test_routed_logps_equal_all_heads_then_select(tiny2):
    _, base, _ = tiny2
    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=2, head_init_noise=0.1,
                                                   seed=1)
    b = _batch()
    heads = jnp.asarray(b["objective_ids"])
    routed = response_logps(model, params, b, head_ids=heads, group_size=4)
    per_head = [response_logps(model, params, b, head_ids=jnp.full_like(heads, k))
                for k in range(2)]
    sel = jnp.where(heads == 0, per_head[0], per_head[1])
    np.testing.assert_allclose(routed, sel, atol=1e-4, rtol=1e-6)


def test_gradients_reach_only_present_heads_and_trunk_gets_mean(tiny2):
    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=3, head_init_noise=0.05,
                                                   seed=2)
    b = _batch(objective_ids=(0, 2, 0, 2))  # objective 1 absent
    lp = response_logps(model, params, b)
    b["ref_chosen"], b["ref_rejected"] = lp[:4] + 0.3, lp[4:] - 0.2

    def loss(p, **kw):
        return preference_loss_fn(model, p, b, objectives=["x", "y", "z"], beta=0.1, **kw)[0]

    g = jax.grad(loss)(params)
    hk = g["heads"]["kernel"]
    assert float(jnp.abs(hk[1]).max()) == 0.0  # absent objective: its head gets nothing
    assert float(jnp.abs(hk[0]).max()) > 0 and float(jnp.abs(hk[2]).max()) > 0

    # Trunk gradient = mean over present objectives of each objective's own loss gradient.
    def obj_loss(p, k):
        _, m = preference_loss_fn(model, p, b, objectives=["x", "y", "z"], beta=0.1)
        return m[f"loss/{'xyz'[k]}"]

    g0 = jax.grad(lambda p: obj_loss(p, 0))(params)
    g2 = jax.grad(lambda p: obj_loss(p, 2))(params)
    mean = jax.tree_util.tree_map(lambda a, c: 0.5 * (a + c), g0["trunk"], g2["trunk"])
    for a, c in zip(jax.tree_util.tree_leaves(g["trunk"]), jax.tree_util.tree_leaves(mean)):
        np.testing.assert_allclose(a, c, atol=1e-6, rtol=1e-4)


def test_metrics_match_preference_loss(tiny2):
    model, params, _ = tiny2
    b = _batch()
    b["ref_chosen"] = np.array([-40.0, -41.0, -39.0, -42.0], np.float32)
    b["ref_rejected"] = np.array([-40.5, -40.0, -39.5, -41.0], np.float32)
    _, m = preference_loss_fn(model, params, b, objectives=["a", "b"], beta=0.1)
    lp = response_logps(model, params, b, head_ids=jnp.asarray(b["objective_ids"]))
    losses, cr, rr = preference_loss(lp[:4], lp[4:], b["ref_chosen"], b["ref_rejected"], beta=0.1)
    np.testing.assert_allclose(m["loss/a"], (losses[0] + losses[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["rewards/b/margin"], ((cr - rr)[1] + (cr - rr)[3]) / 2,
                               rtol=1e-5)
    np.testing.assert_allclose(m["loss"], (m["loss/a"] + m["loss/b"]) / 2, rtol=1e-6)


def test_response_view_keeps_every_label():
    labels = np.full((3, 10), -100, np.int32)
    labels[0, 4:9] = [1, 2, 3, 4, 5]
    labels[1, 2:10] = np.arange(8)
    idx, lab = response_view(labels, bucket=4)
    assert idx.shape == (3, 8)
    np.testing.assert_array_equal(lab[1], np.arange(8))
    np.testing.assert_array_equal(idx[0, :5], [3, 4, 5, 6, 7])
    assert (lab[2] == -100).all() and (lab[0, 5:] == -100).all()
