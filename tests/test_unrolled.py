"""models/unrolled.py: the decode layout (per-layer params and caches) computes what the scanned
trunk computes (tiny, 1e-5): no cache, a stacked cache, a per-layer cache, trunk parts. (The
decode loops that use it are checked against full forwards in test_sampling / test_guided /
test_demo.)"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.models import CausalLM, get_preset, init_cache
from mtalign_jax.models.kv_cache import per_layer, stacked
from mtalign_jax.models.split import part_config, split_model, split_params
from mtalign_jax.models.unrolled import unroll_params, unrolled


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny").replace(n_layers=3)
    model = CausalLM(cfg, 2)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(5),
                                          jnp.zeros((1, 8), jnp.int32))["params"])
    return model, params


def _ids(b, t, v, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(3, v, (b, t)), jnp.int32)


def test_unroll_params_names_every_layer(tiny):
    model, params = tiny
    u = unroll_params(params["trunk"])
    assert sorted(u) == ["embed", "final_norm", "layers_0", "layers_1", "layers_2"]
    np.testing.assert_array_equal(u["layers_2"]["mlp"]["up_proj"]["kernel"],
                                  params["trunk"]["layers"]["mlp"]["up_proj"]["kernel"][2])
    assert unroll_params(u) is u
    model_u, params_u = unrolled(model, params)
    assert model_u.cfg.unrolled and not model.cfg.unrolled
    assert unrolled(model_u, params_u)[1] is params_u
    with pytest.raises(TypeError, match="CausalLM or a Trunk"):
        unrolled(nn.Dense(3), params)


def test_unrolled_forward_and_caches_equal_scanned(tiny):
    model, params = tiny
    model_u, params_u = unrolled(model, params)
    ids = _ids(2, 9, model.cfg.vocab_size)
    mask = jnp.ones_like(ids).at[1, :3].set(0)  # a left-padded row
    real = np.asarray(mask, bool)
    ref = np.asarray(model.apply({"params": params}, ids, attention_mask=mask))
    got = np.asarray(model_u.apply({"params": params_u}, ids, attention_mask=mask))
    np.testing.assert_allclose(got[real], ref[real], atol=1e-5)

    # prefill 6 tokens into a stacked cache, then 3 single steps on a per-layer cache
    c_ref = init_cache(model.cfg, 2, 12)
    lg_ref, c_ref = model.apply({"params": params}, ids[:, :6], cache=c_ref,
                                attention_mask=mask[:, :6])
    lg_u, c_u = model_u.apply({"params": params_u}, ids[:, :6], cache=init_cache(model.cfg, 2, 12),
                              attention_mask=mask[:, :6])
    np.testing.assert_allclose(np.asarray(c_u.k), np.asarray(c_ref.k), atol=1e-5)
    c_u = per_layer(c_u)
    assert isinstance(c_u.k, tuple) and len(c_u.k) == 3 and c_u.max_len == 12 and c_u.batch == 2
    for t in range(6, 9):
        lr, c_ref = model.apply({"params": params}, ids[:, t:t + 1], cache=c_ref)
        lu, c_u = model_u.apply({"params": params_u}, ids[:, t:t + 1], cache=c_u)
        np.testing.assert_allclose(np.asarray(lu), np.asarray(lr), atol=1e-5)
    back = stacked(c_u)
    np.testing.assert_allclose(np.asarray(back.v), np.asarray(c_ref.v), atol=1e-5)
    assert int(back.index) == int(c_ref.index) == 9
    np.testing.assert_allclose(np.asarray(lu[:, 0]), ref[:, 8], atol=1e-5)


def test_unrolled_parts_equal_scanned_parts(tiny):
    model, params = tiny
    lower, upper = split_model(model.cfg, 1)
    lo_p, up_p = split_params(params["trunk"], 1)
    (lower_u, lo_u), (upper_u, up_u) = unrolled(lower, lo_p), unrolled(upper, up_p)
    ids = _ids(2, 7, model.cfg.vocab_size, seed=2)
    c_lo, c_up = init_cache(part_config(model.cfg, 2), 2, 8), init_cache(part_config(model.cfg,
                                                                                    1), 2, 8)
    x, c_lo = lower.apply({"params": lo_p}, ids[:, :6], cache=c_lo)
    h, c_up = upper.apply({"params": up_p}, x, cache=c_up)
    xu, clu = lower_u.apply({"params": lo_u}, ids[:, 6:], cache=per_layer(c_lo))
    hu, cuu = upper_u.apply({"params": up_u}, xu, cache=per_layer(c_up))
    x1, _ = lower.apply({"params": lo_p}, ids[:, 6:], cache=c_lo)
    h1, _ = upper.apply({"params": up_p}, x1, cache=c_up)
    np.testing.assert_allclose(np.asarray(xu), np.asarray(x1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(hu), np.asarray(h1), atol=1e-5)
    assert len(clu.k) == 2 and len(cuu.k) == 1
