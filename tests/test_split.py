"""models/split.py: lower + upper trunk parts equal the full trunk (1e-5 on tiny), full forward
and incremental with KV caches, and the params round-trip."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.models import CausalLM, get_preset, init_cache
from mtalign_jax.models.split import merge_params, part_config, split_model, split_params


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny").replace(n_layers=4)
    model = CausalLM(cfg, 1)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(1),
                                          jnp.zeros((1, 8), jnp.int32))["params"])
    return model, params


def _ids(b, t, v, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(3, v, (b, t)), jnp.int32)


@pytest.mark.parametrize("n_top", [1, 3])
def test_lower_then_upper_equals_full_trunk(tiny, n_top):
    model, params = tiny
    ids = _ids(3, 12, model.cfg.vocab_size)
    mask = jnp.ones_like(ids).at[0, :4].set(0)  # a left-padded row
    full, _ = model.apply({"params": params}, ids, attention_mask=mask, method=CausalLM.hidden)
    lower, upper = split_model(model.cfg, n_top)
    lo_p, up_p = split_params(params["trunk"], n_top)
    assert jax.tree_util.tree_leaves(lo_p["layers"])[0].shape[0] == 4 - n_top
    x, _ = lower.apply({"params": lo_p}, ids, attention_mask=mask)
    h, _ = upper.apply({"params": up_p}, x, attention_mask=mask)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(h)[real], np.asarray(full)[real], atol=1e-5)
    assert float(jnp.max(jnp.abs(h - x))) > 1e-3  # the upper layers really did something


def test_parts_with_caches_equal_full_trunk(tiny):
    model, params = tiny
    ids = _ids(2, 10, model.cfg.vocab_size, seed=1)
    full, _ = model.apply({"params": params}, ids, method=CausalLM.hidden)
    lower, upper = split_model(model.cfg, 2)
    lo_p, up_p = split_params(params["trunk"], 2)
    c_lo = init_cache(part_config(model.cfg, 2), 2, 16)
    c_up = init_cache(part_config(model.cfg, 2), 2, 16)
    outs = []
    for a, b in ((0, 6), (6, 7), (7, 10)):  # prefill, one token, a chunk
        x, c_lo = lower.apply({"params": lo_p}, ids[:, a:b], cache=c_lo)
        h, c_up = upper.apply({"params": up_p}, x, cache=c_up)
        outs.append(h)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full),
                               atol=1e-5)
    assert int(c_lo.index) == int(c_up.index) == 10


def test_merge_params_inverts_split(tiny):
    _, params = tiny
    lo, up = split_params(params["trunk"], 1)
    back = merge_params(lo, up)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params["trunk"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="n_top"):
        split_params(params["trunk"], 4)
