"""Sampling: greedy equals a manual argmax loop, top-k/top-p support, reproducible sampling,
batched equals one-by-one, stop strings, EOS per row, head mixing, continuing decode_steps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.data.tokenizer import ByteTokenizer
from mtalign_jax.decoding.sampling import (bucket_size, decode_steps, generate, pad_prompts,
                                           prefill, sample_logits)
from mtalign_jax.models import CausalLM, get_preset
from mtalign_jax.models.heads import mixed_kernel

PROMPTS = [[10, 20, 30], list(range(40, 60)), [5, 6, 7, 8, 9, 11, 12]]


def _init(num_heads=1, seed=3):
    model = CausalLM(get_preset("tiny"), num_heads)
    v = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))
    return model, nn.unbox(v["params"])


@pytest.fixture(scope="module")
def tiny():
    return _init()


_forward = jax.jit(lambda model, p, ids: model.apply({"params": p}, ids), static_argnums=0)


def _manual_greedy(model, params, prompt, n, buf=64):
    """Argmax loop with the full (uncached) forward on a right-padded fixed-size buffer; causal
    attention makes position t independent of what follows it."""
    ids = np.zeros((1, buf), np.int32)
    ids[0, :len(prompt)] = prompt
    t = len(prompt)
    for _ in range(n):
        ids[0, t] = int(jnp.argmax(_forward(model, params, jnp.asarray(ids))[0, t - 1]))
        t += 1
    return ids[0, len(prompt):t].tolist()


def test_greedy_equals_manual_argmax_loop(tiny):
    model, params = tiny
    res = generate(model, params, PROMPTS, max_new_tokens=9)
    for p, r in zip(PROMPTS, res):
        assert r.tokens == _manual_greedy(model, params, p, 9)
        assert r.finish_reason == "length"


def test_batched_equals_one_by_one(tiny):
    model, params = tiny
    prompts = PROMPTS + [list(range(1, 41))]  # 40 tokens: a bigger length bucket than the rest
    batched = generate(model, params, prompts, max_new_tokens=6)
    for p, r in zip(prompts, batched):
        (alone,) = generate(model, params, [p], max_new_tokens=6)
        assert r.tokens == alone.tokens


def test_top_k_1_equals_greedy_and_sampling_is_seeded(tiny):
    model, params = tiny
    greedy = generate(model, params, PROMPTS, max_new_tokens=8)
    k1 = generate(model, params, PROMPTS, max_new_tokens=8, temperature=1.0, top_k=1,
                  rng=jax.random.PRNGKey(5))
    assert [r.tokens for r in k1] == [r.tokens for r in greedy]
    a = generate(model, params, PROMPTS, max_new_tokens=8, temperature=1.0,
                 rng=jax.random.PRNGKey(11))
    b = generate(model, params, PROMPTS, max_new_tokens=8, temperature=1.0,
                 rng=jax.random.PRNGKey(11))
    c = generate(model, params, PROMPTS, max_new_tokens=8, temperature=1.0,
                 rng=jax.random.PRNGKey(12))
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.tokens for r in a] != [r.tokens for r in c]
    assert [r.tokens for r in a] != [r.tokens for r in greedy]


def test_sample_logits_top_k_and_top_p_support():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]] * 2000))
    keys = jax.random.PRNGKey(0)
    greedy = sample_logits(logits[:2], keys, temperature=0.0)
    np.testing.assert_array_equal(greedy, [1, 1])
    free = np.bincount(sample_logits(logits, keys, temperature=1.0), minlength=4) / 2000
    np.testing.assert_allclose(free, [0.05, 0.5, 0.15, 0.3], atol=0.04)
    k2 = np.bincount(sample_logits(logits, keys, temperature=1.0, top_k=2), minlength=4) / 2000
    np.testing.assert_allclose(k2, [0, 0.5 / 0.8, 0, 0.3 / 0.8], atol=0.04)
    assert k2[0] == 0 and k2[2] == 0
    # Nucleus 0.7: 0.5 alone is below 0.7, 0.5 + 0.3 reaches it -> tokens {1, 3}.
    p7 = np.bincount(sample_logits(logits, keys, temperature=1.0, top_p=0.7), minlength=4) / 2000
    assert p7[0] == 0 and p7[2] == 0
    np.testing.assert_allclose(p7[[1, 3]], [0.625, 0.375], atol=0.04)
    # Both: top-3 renormalised is (0.526, 0.158, 0.316); top_p 0.5 keeps token 1 only.
    both = sample_logits(logits, keys, temperature=1.0, top_k=3, top_p=0.5)
    assert set(np.asarray(both).tolist()) == {1}
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(logits, keys, temperature=1.0, top_p=0.0)


def test_pad_prompts_and_buckets():
    ids, mask = pad_prompts([[1, 2, 3], [4]], pad_id=9, buckets=(4, 8))
    np.testing.assert_array_equal(ids, [[9, 1, 2, 3], [9, 9, 9, 4]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    assert pad_prompts([[1] * 5], 0, (4, 8))[0].shape == (1, 8)
    assert bucket_size(17, (4, 8)) == 24
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pad_prompts([[1], []], 0)


def test_eos_stops_a_row_while_others_continue(tiny):
    model, params = tiny
    free = generate(model, params, PROMPTS, max_new_tokens=10)
    # An EOS id that row 0 emits at step 3 and no other row ever emits.
    others = set(free[1].tokens) | set(free[2].tokens)
    step = next(i for i in range(2, 10) if free[0].tokens[i] not in others
                and free[0].tokens[i] not in free[0].tokens[:i])
    eos = free[0].tokens[step]
    res = generate(model, params, PROMPTS, max_new_tokens=10, eos_ids=[eos])
    assert res[0].tokens == free[0].tokens[:step + 1]
    assert res[0].finish_reason == "eos"
    for i in (1, 2):
        assert res[i].tokens == free[i].tokens
        assert res[i].finish_reason == "length"


def test_stop_strings_truncate_text(tiny):
    model, params = tiny
    tok = ByteTokenizer()
    prompt = tok.encode_chat([{"role": "user", "content": "hello"}])
    (full,) = generate(model, params, [prompt], max_new_tokens=24, tokenizer=tok, eos_ids=())
    assert full.text == tok.decode(full.tokens, skip_special=True)
    assert len(full.text) >= 6, full.text
    stop = full.text[3:5]
    (cut,) = generate(model, params, [prompt], max_new_tokens=24, tokenizer=tok, eos_ids=(),
                      stop_strings=["NEVER-THERE", stop])
    assert cut.text == full.text[:full.text.index(stop)]
    assert cut.finish_reason == "stop_string"
    assert cut.tokens == full.tokens


def test_head_mixing_in_generate():
    model, params = _init(num_heads=2, seed=4)
    noisy = params["heads"]["kernel"].at[1].add(
        0.05 * jax.random.normal(jax.random.PRNGKey(1), params["heads"]["kernel"].shape[1:]))
    params = dict(params, heads={"kernel": noisy})
    head0 = generate(model, params, PROMPTS, max_new_tokens=6)
    w10 = generate(model, params, PROMPTS, max_new_tokens=6, head_weights=[1.0, 0.0])
    assert [r.tokens for r in w10] == [r.tokens for r in head0]
    w = [0.3, 0.7]
    mixed = generate(model, params, PROMPTS, max_new_tokens=6, head_weights=w)
    one = dict(params, heads={"kernel": mixed_kernel(noisy, jnp.array(w))[None]})
    ref = generate(CausalLM(model.cfg, 1), one, PROMPTS, max_new_tokens=6)
    assert [r.tokens for r in mixed] == [r.tokens for r in ref]
    head1 = generate(model, params, PROMPTS, max_new_tokens=6, head_weights=[0.0, 1.0])
    assert [r.tokens for r in head1] != [r.tokens for r in head0]
    with pytest.raises(ValueError, match="2 action head"):
        generate(model, params, PROMPTS, max_new_tokens=2, head_weights=[1.0, 0.0, 0.0])


def test_decode_steps_stop_ids_and_continuation(tiny):
    """Rows stop at their own delimiter; last_logits and the cache continue exactly like one
    uninterrupted greedy generation (what guided decoding relies on)."""
    model, params = tiny
    ref = [_manual_greedy(model, params, p, 12) for p in PROMPTS]
    delim = ref[0][3]  # row 0 stops early at its first occurrence of this token
    ids, mask = pad_prompts(PROMPTS, 0)
    last, cache = prefill(model, params, ids, mask, ids.shape[1] + 32)
    out = decode_steps(model, params, cache, last, jax.random.PRNGKey(0), 8, stop_ids=[delim])
    lengths = np.asarray(out.lengths)
    assert cache.k.is_deleted()  # the cache was donated to the decode loop (updated in place)
    for r, seq in enumerate(ref):
        n = seq.index(delim) + 1 if delim in seq[:8] else 8
        assert lengths[r] == n
        assert np.asarray(out.tokens)[r, :n].tolist() == seq[:n]
        assert bool(out.done[r]) == (delim in seq[:8])
    assert bool(out.done[0]) and not bool(out.done.all())  # rows stopped at different times
    # Continue every row (including the stopped ones) without a stop set.
    out2 = decode_steps(model, params, out.cache, out.last_logits, jax.random.PRNGKey(1), 4)
    for r, seq in enumerate(ref):
        got = np.asarray(out.tokens)[r, :lengths[r]].tolist() + np.asarray(out2.tokens)[r].tolist()
        assert got == seq[:lengths[r] + 4]


def test_fast_top_k_and_categorical_match_the_library_semantics():
    """top_k_mask equals `x >= k-th largest` (ties kept); categorical_rows draws from the
    softmax (frequencies of 20k draws within 0.01) and never picks a masked entry."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtalign_jax.decoding.sampling import categorical_rows, top_k_mask

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 300)).astype(np.float32) * 5
    x[0, :7] = 2.5  # ties at the threshold
    x[1] = -np.abs(x[1])  # all negative
    for k in (1, 7, 50, 299):
        kth = np.sort(x, axis=1)[:, ::-1][:, k - 1:k]
        np.testing.assert_array_equal(np.asarray(top_k_mask(jnp.asarray(x), k)), x >= kth)
    # the block path (V >= 2 x 128 x k): candidates from the k blocks with the largest maxima
    v = 5000  # 40 blocks, the last one partial
    y = rng.standard_normal((8, v)).astype(np.float32)
    y[0, :300] = 9.0  # the top entries all in the first blocks, ties across blocks
    y[1] = np.round(y[1])  # many ties everywhere
    y[2] = 1.0  # one value
    y[3, ::128] = 7.0  # exactly one top entry in each block, equal
    y[4, 4000:] = -np.inf
    y[5] = np.arange(v, dtype=np.float32)[::-1]
    y[6, 4990:] = 50.0  # the partial block holds the top
    for k in (1, 2, 7, 19):
        kth = np.sort(y, axis=1)[:, ::-1][:, k - 1:k]
        np.testing.assert_array_equal(np.asarray(jax.jit(top_k_mask, static_argnums=1)(
            jnp.asarray(y), k)), y >= kth, err_msg=f"k={k}")
    probs = np.array([0.1, 0.2, 0.0, 0.7], np.float32)
    logits = np.full((1, 257), -np.inf, np.float32)  # 257: the last chunk is partial
    logits[0, [3, 130, 200, 256]] = np.log(np.maximum(probs, 1e-38))
    logits[0, 200] = jnp.finfo(jnp.float32).min  # masked like top-k / top-p do
    keys = jax.random.split(jax.random.PRNGKey(3), 20000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: categorical_rows(k[None], jnp.asarray(
        logits))[0]))(keys))
    freq = np.array([np.mean(draws == i) for i in (3, 130, 200, 256)])
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert set(np.unique(draws)) <= {3, 130, 256}
