"""Optimizer from config: torch parity (RMSprop, AdamW), schedules, clipping, accumulation,
freezing by path patterns, top-N layers, and the NaN policies."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mtalign_jax.training import optim

A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], np.float32)
B = np.array([1.0, -2.0, 0.5], np.float32)
X0 = {"w": np.array([0.3, -0.7, 1.2], np.float32), "b": np.array([[0.5, -0.25]], np.float32)}


def _cfg(**kw):
    base = dict(name="rmsprop", lr=0.01, warmup_steps=0, schedule="constant", total_steps=10,
                weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, rmsprop_decay=0.99,
                clip_norm=0.0, grad_accum=1, freeze=(), train_top_layers=0, nan_policy="skip")
    base.update(kw)
    return ml_collections.ConfigDict(base)


def _loss_jax(p):
    w = p["w"]
    return 0.5 * w @ (A @ w) - B @ w + jnp.sum(jnp.square(p["b"] - 1.0) * 3.0)


def _run_jax(cfg, steps=5):
    params = jax.tree_util.tree_map(jnp.asarray, X0)
    tx = optim.make_optimizer(cfg, params)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(_loss_jax)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return jax.device_get(params)


def _run_torch(make_opt, lr_lambda, steps=5):
    import torch

    w = torch.tensor(X0["w"], requires_grad=True)
    b = torch.tensor(X0["b"], requires_grad=True)
    opt = make_opt([w, b])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ta, tb = torch.tensor(A), torch.tensor(B)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * w @ (ta @ w) - tb @ w + torch.sum((b - 1.0) ** 2 * 3.0)
        loss.backward()
        opt.step()
        sched.step()
    return {"w": w.detach().numpy(), "b": b.detach().numpy()}


def _warm(w):
    return lambda s: min(1.0, (s + 1) / (w + 1))


def test_rmsprop_matches_torch_with_warmup_and_l2():
    import torch

    cfg = _cfg(name="rmsprop", lr=0.01, warmup_steps=3, weight_decay=0.01)
    ours = _run_jax(cfg)
    ref = _run_torch(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8,
                                                   weight_decay=0.01), _warm(3))
    for k in ours:
        np.testing.assert_allclose(ours[k], ref[k], atol=1e-6, rtol=0)
    # and it moved (a test that cannot fail is a defect)
    assert np.abs(ours["w"] - X0["w"]).max() > 1e-3


def test_rmsprop_eps_is_outside_the_sqrt():
    # a tiny gradient where sqrt(v + eps) and sqrt(v) + eps differ by orders of magnitude
    cfg = _cfg(name="rmsprop", lr=1.0, eps=1e-4, nan_policy="stop")
    p = {"x": jnp.zeros(())}
    tx = optim.make_optimizer(cfg, p)
    u, _ = tx.update({"x": jnp.asarray(1e-6)}, tx.init(p), p)
    v = 0.01 * 1e-12
    np.testing.assert_allclose(float(u["x"]), -1e-6 / (math.sqrt(v) + 1e-4), rtol=1e-5)


def test_adamw_matches_torch_with_cosine():
    import torch

    w, t = 2, 6

    def lam(s):
        if s < w:
            return min(1.0, (s + 1) / (w + 1))
        return 0.5 * (1 + math.cos(math.pi * (s - w) / (t - w)))

    cfg = _cfg(name="adamw", lr=0.05, warmup_steps=w, schedule="cosine", total_steps=t,
               weight_decay=0.1, b1=0.8, b2=0.95)
    ours = _run_jax(cfg)
    ref = _run_torch(lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.8, 0.95), eps=1e-8,
                                                 weight_decay=0.1), lam)
    for k in ours:
        np.testing.assert_allclose(ours[k], ref[k], atol=1e-6, rtol=0)
    assert np.abs(ours["w"] - X0["w"]).max() > 1e-2


def test_schedules():
    s = optim.learning_rate_schedule(_cfg(lr=2.0, warmup_steps=3))
    np.testing.assert_allclose([float(s(i)) for i in range(6)], [0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
    c = optim.learning_rate_schedule(_cfg(lr=1.0, warmup_steps=1, schedule="cosine",
                                          total_steps=5))
    np.testing.assert_allclose([float(c(i)) for i in range(6)],
                               [0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0], atol=1e-7)
    with pytest.raises(ValueError, match="optim.schedule"):
        optim.learning_rate_schedule(_cfg(schedule="linear"))
    with pytest.raises(ValueError, match="optim.name"):
        optim.make_optimizer(_cfg(name="lion"), X0)


def test_global_norm_clipping():
    cfg = _cfg(name="sgd", lr=1.0, clip_norm=1.0, nan_policy="stop")
    p = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    tx = optim.make_optimizer(cfg, p)
    big = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # norm 5 -> scaled to 1
    u, _ = tx.update(big, tx.init(p), p)
    np.testing.assert_allclose(u["a"], [-0.6, 0.0], atol=1e-7)
    np.testing.assert_allclose(u["b"], [-0.8], atol=1e-7)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([0.4])}  # norm 0.5: untouched
    u, _ = tx.update(small, tx.init(p), p)
    np.testing.assert_allclose(u["a"], [-0.3, 0.0], atol=1e-7)


def test_multisteps_equals_one_step_on_mean_gradient():
    p = {"x": jnp.array([1.0, -2.0, 0.5])}
    g1, g2 = {"x": jnp.array([0.2, 1.0, -3.0])}, {"x": jnp.array([0.6, -0.4, 1.0])}
    acc = optim.make_optimizer(_cfg(grad_accum=2, clip_norm=1.0), p)
    s = acc.init(p)
    u, s = acc.update(g1, s, p)
    np.testing.assert_array_equal(u["x"], 0.0)  # no update after the first micro-batch
    p1 = optax.apply_updates(p, u)
    u, s = acc.update(g2, s, p1)
    p_acc = optax.apply_updates(p1, u)

    one = optim.make_optimizer(_cfg(grad_accum=1, clip_norm=1.0), p)
    mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, g1, g2)
    u, _ = one.update(mean, one.init(p), p)
    p_one = optax.apply_updates(p, u)
    np.testing.assert_allclose(p_acc["x"], p_one["x"], atol=1e-7, rtol=0)
    assert np.abs(np.asarray(p_one["x"]) - np.asarray(p["x"])).max() > 1e-3


def _model_like(n_layers=3, d=4, v=6, k=2):
    """A hand-built tree with the CausalLM parameter paths (docs/ARCHITECTURE.md)."""
    r = np.random.RandomState(0)
    f = lambda *s: jnp.asarray(r.normal(size=s).astype(np.float32))  # noqa: E731
    return {
        "trunk": {
            "embed": {"embedding": f(v, d)},
            "layers": {"attn_norm": {"scale": f(n_layers, d)},
                       "attn": {"q_proj": {"kernel": f(n_layers, d, d)}},
                       "mlp": {"down_proj": {"kernel": f(n_layers, 2 * d, d)}}},
            "final_norm": {"scale": f(d)},
        },
        "heads": {"kernel": f(k, d, v)},
    }


def _train(cfg, params, steps=3, grad_scale=1.0):
    tx = optim.make_optimizer(cfg, params)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for i in range(steps):
        g = jax.tree_util.tree_map(lambda x: grad_scale * jnp.cos(x + i), params)
        u, state = step(params, state, g)
        params = optax.apply_updates(params, u)
    return jax.device_get(params), state


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def test_freeze_patterns_keep_frozen_leaves_bit_identical():
    p0 = _model_like()
    cfg = _cfg(name="adamw", lr=0.1, weight_decay=0.5, clip_norm=1.0, freeze=("trunk/.*",))
    p, state = _train(cfg, p0)
    for a, b in zip(jax.tree_util.tree_leaves(p0["trunk"]), jax.tree_util.tree_leaves(p["trunk"])):
        assert _same_bits(a, b)
    assert np.abs(p["heads"]["kernel"] - np.asarray(p0["heads"]["kernel"])).max() > 1e-2
    # comma-separated string form, and a typo fails loudly
    p, _ = _train(_cfg(freeze="trunk/embed/.*,heads/.*"), p0)
    assert _same_bits(p["heads"]["kernel"], p0["heads"]["kernel"])
    assert not _same_bits(p["trunk"]["final_norm"]["scale"], p0["trunk"]["final_norm"]["scale"])
    with pytest.raises(ValueError, match="'trunc/.\\*' matches no parameter"):
        optim.make_optimizer(_cfg(freeze=("trunc/.*",)), p0)


def test_train_top_layers_masks_lower_rows():
    p0 = _model_like(n_layers=3)
    cfg = _cfg(name="adamw", lr=0.1, weight_decay=0.5, train_top_layers=1)
    p, _ = _train(cfg, p0)
    for path in [("attn_norm", "scale"), ("attn", "q_proj", "kernel"),
                 ("mlp", "down_proj", "kernel")]:
        a, b = p0["trunk"]["layers"], p["trunk"]["layers"]
        for key in path:
            a, b = a[key], b[key]
        assert _same_bits(a[:2], b[:2]), path  # layers 0, 1 frozen
        assert np.abs(np.asarray(a[2]) - b[2]).max() > 1e-2, path  # the top layer trains
    assert _same_bits(p0["trunk"]["embed"]["embedding"], p["trunk"]["embed"]["embedding"])
    assert _same_bits(p0["trunk"]["final_norm"]["scale"], p["trunk"]["final_norm"]["scale"])
    assert np.abs(p["heads"]["kernel"] - np.asarray(p0["heads"]["kernel"])).max() > 1e-2
    # `unfreeze` keeps the final norm trainable
    p, _ = _train(_cfg(train_top_layers=2, unfreeze=("trunk/final_norm/.*",)), p0)
    assert not _same_bits(p0["trunk"]["final_norm"]["scale"], p["trunk"]["final_norm"]["scale"])
    assert _same_bits(p0["trunk"]["layers"]["attn_norm"]["scale"][:1],
                      p["trunk"]["layers"]["attn_norm"]["scale"][:1])
    with pytest.raises(ValueError, match="train_top_layers=4"):
        optim.make_optimizer(_cfg(train_top_layers=4), p0)


def test_nan_skip_leaves_params_unchanged_and_counts():
    p0 = _model_like()
    cfg = _cfg(name="rmsprop", lr=0.1, clip_norm=1.0, grad_accum=1)
    tx = optim.make_optimizer(cfg, p0)
    update = jax.jit(tx.update)
    s = tx.init(p0)
    good = jax.tree_util.tree_map(jnp.cos, p0)
    u, s = update(good, s, p0)
    p1 = optax.apply_updates(p0, u)
    bad = jax.tree_util.tree_map(lambda g: g, good)
    bad["heads"]["kernel"] = bad["heads"]["kernel"].at[0, 0, 0].set(jnp.nan)
    u, s_bad = update(bad, s, p1)
    p2 = optax.apply_updates(p1, u)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        assert _same_bits(a, b)
    assert int(optim.skipped_updates(s)) == 0
    assert int(optim.skipped_updates(s_bad)) == 1
    # the inner state did not move either: the next good step equals one taken without the NaN
    u_a, s_a = update(good, s_bad, p2)
    u_b, _ = update(good, s, p1)
    for a, b in zip(jax.tree_util.tree_leaves(u_a), jax.tree_util.tree_leaves(u_b)):
        assert _same_bits(a, b)
    assert int(optim.skipped_updates(s_a)) == 1
    # with accumulation too: the NaN micro-batch is dropped, counted
    acc = optim.make_optimizer(_cfg(grad_accum=2), p0)
    sa = acc.init(p0)
    _, sa = jax.jit(acc.update)(bad, sa, p0)
    assert int(optim.skipped_updates(sa)) == 1


def test_nan_stop_raises_clearly():
    p0 = _model_like()
    tx = optim.make_optimizer(_cfg(nan_policy="stop"), p0)
    assert int(optim.skipped_updates(tx.init(p0))) == 0
    optim.check_finite_or_raise(3, {"loss": jnp.asarray(1.5), "grad_norm": 2.0, "finite": True})
    with pytest.raises(FloatingPointError, match="step 7: non-finite.*loss=nan"):
        optim.check_finite_or_raise(7, {"loss": jnp.asarray(jnp.nan), "grad_norm": 1.0})
    with pytest.raises(FloatingPointError, match="finite=False"):
        optim.check_finite_or_raise(8, {"loss": 1.0, "finite": jnp.asarray(False)})
    with pytest.raises(ValueError, match="optim.nan_policy"):
        optim.make_optimizer(_cfg(nan_policy="ignore"), p0)


@functools.lru_cache(maxsize=None)
def _tiny_grad():
    """(tiny 2-head params, jitted grad of a routed NLL on one fixed batch): compiled once."""
    import mtalign_jax
    from mtalign_jax.training.steps import response_logps
    from mtalign_jax.training.tasks import response_view

    model, p0, _ = mtalign_jax.load_pretrained("tiny", num_heads=2, head_init_noise=0.02,
                                               seed=42)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, size=(4, 16)).astype(np.int32)
    labels = np.where(np.arange(16)[None] < 6, -100, ids).astype(np.int32)
    b = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    b["resp_idx"], b["resp_labels"] = response_view(labels, bucket=16)
    heads = jnp.array([0, 1, 0, 1], jnp.int32)
    grad = jax.jit(jax.grad(lambda q: -jnp.mean(response_logps(model, q, b, head_ids=heads))))
    return p0, grad


def _tiny_heads_only_run(cfg, steps):
    """Trains the tiny 2-head model on one routed batch; returns params after each update."""
    p0, grad = _tiny_grad()
    tx = optim.make_optimizer(cfg, p0)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    out, p, s = [jax.device_get(p0)], p0, tx.init(p0)
    for _ in range(steps):
        u, s = update(grad(p), s, p)
        p = optax.apply_updates(p, u)
        out.append(jax.device_get(p))
    return out


def test_heads_only_warmup_freezes_the_trunk_for_n_steps_then_trains_it():
    n, lr, warm = 3, 1e-3, 10
    cfg = _cfg(name="adamw", lr=lr, warmup_steps=warm, clip_norm=1.0,
               heads_only_warmup_steps=n)
    ps = _tiny_heads_only_run(cfg, n + 1)
    p0, pn, pn1 = ps[0], ps[n], ps[n + 1]
    trunk0 = jax.tree_util.tree_leaves_with_path(p0["trunk"])
    for (path, a), b in zip(trunk0, jax.tree_util.tree_leaves(pn["trunk"])):
        assert _same_bits(a, b), optim.path_str(path)  # N updates: trunk bit-identical
    for i in range(1, n + 1):  # the heads move at every warm-up step
        assert np.abs(ps[i]["heads"]["kernel"] - ps[i - 1]["heads"]["kernel"]).max() > 1e-5
    moved = [np.abs(np.asarray(b) - np.asarray(a)).max()
             for (_, a), b in zip(trunk0, jax.tree_util.tree_leaves(pn1["trunk"]))]
    assert min(moved) > 0  # update N+1: every trunk leaf moves
    # ... with fresh Adam moments (first step: |update| = lr_t * |g| / (|g| + eps) <= lr_t,
    # reached by the largest gradients) at the global schedule's lr of step N, not of step 0
    lr_n = lr * (n + 1) / (warm + 1)
    assert max(moved) == pytest.approx(lr_n, rel=1e-3)


def test_heads_only_warmup_errors_and_composition():
    p0 = _model_like()
    # N = 0 is exactly the optimizer without the option (same state tree, same updates)
    cfg = dict(name="adamw", lr=0.1, weight_decay=0.1, clip_norm=1.0)
    plain, s_plain = _train(_cfg(**cfg), p0)
    zero, s_zero = _train(_cfg(heads_only_warmup_steps=0, **cfg), p0)
    assert jax.tree_util.tree_structure(s_plain) == jax.tree_util.tree_structure(s_zero)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(zero)):
        assert _same_bits(a, b)
    with pytest.raises(ValueError, match="heads_only_warmup_steps=-1 must be >= 0"):
        optim.make_optimizer(_cfg(heads_only_warmup_steps=-1), p0)
    with pytest.raises(ValueError, match="no trainable parameter outside 'trunk/'"):
        optim.make_optimizer(_cfg(heads_only_warmup_steps=2, freeze=("heads/.*",)), p0)
    # composes with train_top_layers (and L2 decay): the trunk is still for 2 updates, then
    # only the top layer's rows move and the embeddings stay frozen
    cfg = _cfg(name="rmsprop", lr=0.1, train_top_layers=1, heads_only_warmup_steps=2,
               weight_decay=0.1, clip_norm=1.0)
    p2, _ = _train(cfg, p0, steps=2)
    p3, _ = _train(cfg, p0, steps=3)
    for a, b in zip(jax.tree_util.tree_leaves(p0["trunk"]), jax.tree_util.tree_leaves(p2["trunk"])):
        assert _same_bits(a, b)
    q0, q3 = p0["trunk"]["layers"]["attn"]["q_proj"]["kernel"], \
        p3["trunk"]["layers"]["attn"]["q_proj"]["kernel"]
    assert _same_bits(q0[:2], q3[:2]) and np.abs(np.asarray(q0[2]) - q3[2]).max() > 1e-3
    assert _same_bits(p0["trunk"]["embed"]["embedding"], p3["trunk"]["embed"]["embedding"])
