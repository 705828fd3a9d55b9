"""Multi-action heads: routing, mixing, zero-noise copies, response-only logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtalign_jax
from mtalign_jax.models import CausalLM, get_preset
from mtalign_jax.models.heads import mixed_kernel, per_example_logits, routed_logits


@pytest.fixture(scope="module")
def tiny3():
    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=3, head_init_noise=0.05,
                                                   seed=7)
    ids = jax.random.randint(jax.random.PRNGKey(0), (6, 12), 0, 256)
    return model, params, ids


def _all_heads(model, params, ids):
    h, _ = model.apply({"params": params}, ids, method=CausalLM.hidden)
    return jnp.einsum("btd,kdv->kbtv", h, params["heads"]["kernel"]), h


def test_routed_equals_all_heads_then_select(tiny3):
    model, params, ids = tiny3
    head_ids = jnp.array([0, 1, 2, 2, 1, 0])
    routed = model.apply({"params": params}, ids, head_ids=head_ids)
    allh, _ = _all_heads(model, params, ids)
    selected = allh[head_ids, jnp.arange(6)]
    np.testing.assert_allclose(routed, selected, atol=1e-5, rtol=0)


def test_routed_balanced_groups_equal_ragged(tiny3):
    model, params, ids = tiny3
    h, _ = model.apply({"params": params}, ids, method=CausalLM.hidden)
    rows = h.reshape(-1, h.shape[-1])
    head_ids = jnp.repeat(jnp.array([2, 0, 1, 1, 0, 2]), ids.shape[1])
    k = params["heads"]["kernel"]
    a = routed_logits(rows, head_ids, k, group_size=2 * ids.shape[1])
    b = routed_logits(rows, head_ids, k)
    ref = jnp.einsum("nd,ndv->nv", rows, k[head_ids])
    np.testing.assert_allclose(a, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(b, ref, atol=1e-5, rtol=0)


def test_per_example_logits_and_grads_equal_gathered_heads():
    """`per_example_logits` (the off-TPU path of uneven routing) against the gathered-kernel
    einsum: values and the gradients for h and for every head (head 3 has no example; head 1
    has three), float32, 1e-5."""
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(5, 7, 8)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(4, 8, 11)), jnp.float32)
    head_ids = jnp.asarray([1, 0, 1, 2, 1])
    g = jnp.asarray(rng.normal(size=(5, 7, 11)), jnp.float32)  # a random cotangent

    def ref(h, k):
        return jnp.einsum("btd,bdv->btv", h, k[head_ids])

    np.testing.assert_allclose(per_example_logits(h, head_ids, kernel), ref(h, kernel),
                               atol=1e-5, rtol=0)
    ours = jax.grad(lambda h, k: jnp.sum(per_example_logits(h, head_ids, k) * g),
                    argnums=(0, 1))(h, kernel)
    want = jax.grad(lambda h, k: jnp.sum(ref(h, k) * g), argnums=(0, 1))(h, kernel)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert not np.asarray(ours[1][3]).any()  # the unused head gets no gradient
    # the model routes uneven batches through it (off TPU): same logits as all heads + select
    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=3, head_init_noise=0.05,
                                                   seed=7)
    ids = jax.random.randint(jax.random.PRNGKey(2), (4, 6), 0, 256)
    uneven = jnp.array([2, 2, 2, 0])
    routed = model.apply({"params": params}, ids, head_ids=uneven)
    allh, _ = _all_heads(model, params, ids)
    np.testing.assert_allclose(routed, allh[uneven, jnp.arange(4)], atol=1e-5, rtol=0)


def test_mixing_equals_single_weighted_head(tiny3):
    model, params, ids = tiny3
    w = jnp.array([0.2, 0.3, 0.5]) * 4.0  # unnormalised on purpose
    mixed = mtalign_jax.logits(model, params, ids, head_weights=w)
    kernel = params["heads"]["kernel"]
    one = dict(params, heads={"kernel": mixed_kernel(kernel, w)[None]})
    ref = CausalLM(model.cfg, 1).apply({"params": one}, ids)
    np.testing.assert_allclose(mixed, ref, atol=1e-5, rtol=0)
    # The logit ensemble: softmax(sum_i w_i z_i) with w normalised.
    allh, _ = _all_heads(model, params, ids)
    wn = w / w.sum()
    np.testing.assert_allclose(mixed, jnp.einsum("k,kbtv->btv", wn, allh), atol=1e-5, rtol=0)


def test_one_hot_weights_equal_head(tiny3):
    model, params, ids = tiny3
    allh, _ = _all_heads(model, params, ids)
    for i in range(3):
        w = jnp.zeros(3).at[i].set(1.0)
        np.testing.assert_allclose(mtalign_jax.logits(model, params, ids, head_weights=w),
                                   allh[i], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mtalign_jax.logits(model, params, ids), allh[0], atol=1e-5)


def test_zero_noise_heads_reproduce_base():
    base_model, base_params, _ = mtalign_jax.load_pretrained("tiny", num_heads=1, seed=3)
    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=4, seed=3)
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, 256)
    base = base_model.apply({"params": base_params}, ids)
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(params["heads"]["kernel"][i]),
                                      np.asarray(base_params["heads"]["kernel"][0]))
        w = jnp.zeros(4).at[i].set(1.0)
        out = model.apply({"params": params}, ids, head_weights=w)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(base))  # bit-exact
        routed = model.apply({"params": params}, ids, head_ids=jnp.full((2,), i))
        np.testing.assert_allclose(routed, base, atol=1e-6, rtol=0)


def test_head_noise_is_per_head_seeded():
    _, p1, _ = mtalign_jax.load_pretrained("tiny", num_heads=2, head_init_noise=1e-3, seed=42)
    _, p0, _ = mtalign_jax.load_pretrained("tiny", num_heads=1, seed=42)
    k, base = p1["heads"]["kernel"], p0["heads"]["kernel"][0]
    for i in range(2):
        eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(42), i), base.shape)
        np.testing.assert_allclose(k[i], base + 1e-3 * eps, atol=1e-7)
    assert float(jnp.abs(k[0] - k[1]).max()) > 1e-4


def test_response_only_logits_equal_full(tiny3):
    model, params, ids = tiny3
    full = model.apply({"params": params}, ids, head_ids=jnp.array([0, 1, 2, 0, 1, 2]))
    h, _ = model.apply({"params": params}, ids, method=CausalLM.hidden)
    pos = jnp.array([[3, 4, 5, 6]] * 6) + jnp.arange(6)[:, None] % 3
    hr = jnp.take_along_axis(h, pos[..., None], axis=1)  # [B, R, D]
    part = model.apply({"params": params}, hr, head_ids=jnp.array([0, 1, 2, 0, 1, 2]),
                       method=CausalLM.project)
    ref = jnp.take_along_axis(full, pos[..., None], axis=1)
    np.testing.assert_allclose(part, ref, atol=1e-5, rtol=0)


def test_presets_shapes():
    cfg = get_preset("qwen2.5-7b-instruct")
    assert cfg.num_params(1) > 7.0e9
    assert get_preset("llama-3.1-8b-instruct").n_kv_heads == 8
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("gpt-9")
