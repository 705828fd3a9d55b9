"""KV cache: cached decoding equals the full teacher-forced forward (tiny 1e-5, SmolLM2 1e-3 with
identical argmax), left padding, multi-token chunks, repeat/gather, and a sharded forward."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mtalign_jax.models import CausalLM, gather, get_preset, init_cache, repeat


@pytest.fixture(scope="module")
def tiny():
    model = CausalLM(get_preset("tiny"), 1)
    init = jax.jit(model.init)(jax.random.PRNGKey(3), jnp.zeros((1, 8), jnp.int32))
    return model, nn.unbox(init["params"])


def _forward(model, params, ids):
    return model.apply({"params": params}, ids)


_full = jax.jit(_forward, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _step(model, params, ids, cache, mask):
    return model.apply({"params": params}, ids, cache=cache, attention_mask=mask)


def _cached(model, params, ids, chunks, cache_len=32, mask=None):
    """Logits [B, T, V] computed chunk by chunk through one cache (chunk sizes sum to T)."""
    ids = jnp.asarray(ids)
    mask = jnp.ones_like(ids) if mask is None else jnp.asarray(mask)
    cache = init_cache(model.cfg, ids.shape[0], cache_len)
    out, start = [], 0
    for n in chunks:
        lg, cache = _step(model, params, ids[:, start:start + n], cache,
                          mask[:, start:start + n])
        out.append(lg)
        start += n
    assert start == ids.shape[1]
    return jnp.concatenate(out, axis=1), cache


def test_prefill_then_single_steps_equal_full_forward(tiny):
    model, params = tiny
    ids = jax.random.randint(jax.random.PRNGKey(0), (2, 14), 0, 256)
    full = _full(model, params, ids)
    cached, cache = _cached(model, params, ids, [6] + [1] * 8)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
    assert int(cache.index) == 14
    np.testing.assert_array_equal(cache.pos, [14, 14])


def test_multi_token_chunks_equal_full_forward(tiny):
    model, params = tiny
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 11), 0, 256)
    cached, _ = _cached(model, params, ids, [7, 3, 1])
    np.testing.assert_allclose(cached, _full(model, params, ids), atol=1e-5, rtol=0)


def test_left_padded_batch_equals_each_prompt_alone(tiny):
    model, params = tiny
    rng = np.random.RandomState(0)
    lens, t, steps = [3, 9, 6], 9, 4
    prompts = [rng.randint(0, 256, n) for n in lens]
    cont = rng.randint(0, 256, (3, steps))
    ids = np.zeros((3, t + steps), np.int32)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):t] = p
        mask[i, t - len(p):] = 1
    ids[:, t:] = cont
    batched, _ = _cached(model, params, ids, [t] + [1] * steps, mask=mask)
    for i, p in enumerate(prompts):
        alone = _full(model, params, np.concatenate([p, cont[i]])[None])[0]
        np.testing.assert_allclose(batched[i, t - len(p):], alone, atol=1e-5, rtol=0)


def test_repeat_then_gather_restores_rows(tiny):
    model, params = tiny
    ids = jax.random.randint(jax.random.PRNGKey(2), (3, 5), 0, 256)
    _, cache = _cached(model, params, ids, [5], cache_len=8)
    rep = repeat(cache, 4)
    assert rep.k.shape == (2, 12, 2, 8, 8) and rep.v.shape == (2, 12, 2, 8, 8)
    back = gather(rep, jnp.array([0, 4, 8]))  # the first copy of each row
    last = gather(rep, jnp.array([3, 7, 11]))  # the last copy of each row
    for got in (back, last):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(cache)):
            np.testing.assert_array_equal(a, b)
    # A repeated cache continues exactly like the original.
    nxt = jnp.array([[5], [6], [7]])
    ref, _ = _step(model, params, nxt, cache, jnp.ones_like(nxt))
    out, _ = _step(model, params, jnp.repeat(nxt, 4, axis=0), rep, jnp.ones((12, 1), jnp.int32))
    np.testing.assert_allclose(out, jnp.repeat(ref, 4, axis=0), atol=1e-6, rtol=0)


def test_sharded_forward_equals_single_device(tiny):
    model, params = tiny
    devices = np.array(jax.devices()[:8]).reshape(4, 2)
    assert devices.size == 8, "conftest must provide 8 CPU devices"
    mesh = Mesh(devices, ("data", "model"))
    ids = jax.random.randint(jax.random.PRNGKey(4), (8, 12), 0, 256)
    ref = _full(model, params, ids)

    def spec(path, x):  # heads' vocab axis over "model"; everything else replicated
        name = jax.tree_util.keystr(path)
        return NamedSharding(mesh, P(None, None, "model") if "heads" in name else P())

    p_sh = jax.device_put(params, jax.tree_util.tree_map_with_path(spec, params))
    ids_sh = jax.device_put(ids, NamedSharding(mesh, P("data", None)))
    out = jax.jit(_forward, static_argnums=0,
                  out_shardings=NamedSharding(mesh, P("data", None, "model")))(model, p_sh, ids_sh)
    assert out.sharding.spec == P("data", None, "model")
    assert len(out.addressable_shards) == 8
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)


@pytest.mark.heavy
def test_smollm2_cached_equals_full_forward(smollm2):
    model, params, tok = smollm2
    prompt = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    ids = np.asarray(prompt + tok.encode("The capital of France is Paris."), np.int32)[None]
    full = _full(model, params, ids)
    n = ids.shape[1]
    cached, _ = _cached(model, params, ids, [len(prompt)] + [1] * (n - len(prompt)),
                        cache_len=n + 4)
    err = float(jnp.max(jnp.abs(cached - full)))
    assert err < 1e-3, err
    np.testing.assert_array_equal(jnp.argmax(cached, -1), jnp.argmax(full, -1))
