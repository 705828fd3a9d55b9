"""Sampling with an explicit KV cache: one jitted prefill, one jitted `lax.while_loop` decode.

    results = generate(model, params, [tok.encode_chat(msgs)], max_new_tokens=64,
                       rng=jax.random.PRNGKey(0), tokenizer=tok)
    results[0].text, results[0].tokens, results[0].finish_reason

Shapes never depend on the exact prompt lengths or batch size: prompts are LEFT-padded to a
length bucket, the batch is padded to a batch bucket with dummy rows that start finished, and the
number of new tokens is rounded up to a power of two (the exact limit is a traced scalar), so
repeated calls reuse the compiled programs. The decode loop runs on device until every row is
done (EOS / stop token) or the limit is reached; the cache is donated to it, so each step writes
its slot in place instead of copying the whole cache. Finished rows feed `pad_id` with attention
mask 0 (their cache slots stay invalid and their position ids do not advance).

Head mixing: the K action heads are collapsed ONCE into a single mixed head sum_i w_i W_i
(`single_head`), so every decode step projects through one [D, V] kernel.

The lower-level pieces `prefill` and `decode_steps` are what guided decoding reuses: sample a few
tokens (e.g. until a step delimiter), keep the cache, continue.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.models.heads import mixed_kernel
from mtalign_jax.models.kv_cache import KVCache, init_cache
from mtalign_jax.models.kv_cache import stacked as kv_stacked
from mtalign_jax.models.unrolled import loop_cache, unrolled
from mtalign_jax.models.model import CausalLM

# Prompt lengths are padded to the smallest bucket that fits (beyond the last: a multiple of it).
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ----------------------------------------------------------------------------- sampling math


def _check_settings(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"bad sampling settings: temperature={temperature} (>= 0), "
                         f"top_k={top_k} (>= 0), top_p={top_p} (in (0, 1])")


def sample_logits(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Next tokens [B] int32 from logits [B, V] float32.

    `temperature == 0` is greedy (argmax). Otherwise the logits are divided by the temperature,
    restricted to the `top_k` largest (0: no limit; via `lax.top_k`), then to the smallest set
    whose probability reaches `top_p` (nucleus; 1.0: no limit; computed on the top-k
    distribution when both are set), and each row is sampled with its own key split from `rng`.
    The three hyper-parameters are Python numbers (static under jit); ties at a threshold are kept.
    """
    _check_settings(temperature, top_k, top_p)
    if temperature == 0:
        return jnp.argmax(logits.astype(jnp.float32), axis=-1).astype(jnp.int32)
    return sample_logits_rows(logits, jax.random.split(rng, logits.shape[0]),
                              temperature=temperature, top_k=top_k, top_p=top_p)


TOPK_BLOCK = 128


def _ordered_bits(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (a <= b iff image(a) <= image(b))."""
    i = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)  # monotone in x
    return jax.lax.bitcast_convert_type(i, jnp.uint32) ^ jnp.uint32(0x80000000)  # monotone too


def _kth_largest_bits(u: jax.Array, k: int) -> jax.Array:
    """[B, N] uint32 -> [B, 1]: the k-th largest entry of each row, by a 32-step bisection
    (each step one compare-and-count pass; on CPU `lax.top_k` costs ~10x more)."""
    def bit(j, t):  # t: the largest threshold so far with >= k entries at or above
        cand = t | (jnp.uint32(1) << (jnp.uint32(31) - j.astype(jnp.uint32)))
        ok = jnp.sum(u >= cand, axis=-1, keepdims=True) >= k
        return jnp.where(ok, cand, t)

    return jax.lax.fori_loop(0, 32, bit, jnp.zeros(u.shape[:-1] + (1,), jnp.uint32))


def top_k_mask(x: jax.Array, k: int) -> jax.Array:
    """[B, V] float -> [B, V] bool: x >= the row's k-th largest value (ties kept), exactly.

    The k-th largest lies in the k blocks (of `TOPK_BLOCK` entries) with the largest block
    maxima: fewer than k blocks have a maximum above it, and the chosen blocks hold every entry
    above it plus at least as many entries equal to it as the row does, up to k. So one
    max-pass, a `lax.top_k` over the [B, V / 128] block maxima and the bisection over the
    k x 128 candidates (not the V entries: 7.7x fewer passes' worth at V = 49k, k = 50)
    give the same threshold as bisecting the whole row.
    """
    b, v = x.shape
    u = _ordered_bits(x)
    if k * TOPK_BLOCK * 2 > v:  # small vocabulary or large k: bisect the whole row
        return u >= _kth_largest_bits(u, k)
    x = x.astype(jnp.float32)
    nb = -(-v // TOPK_BLOCK)
    blocks = jnp.pad(x, ((0, 0), (0, nb * TOPK_BLOCK - v)), constant_values=-jnp.inf)
    blocks = blocks.reshape(b, nb, TOPK_BLOCK)
    _, top = jax.lax.top_k(blocks.max(axis=-1), k)  # [B, k] block ids
    cand = jnp.take_along_axis(blocks, top[:, :, None], axis=1).reshape(b, k * TOPK_BLOCK)
    return u >= _kth_largest_bits(_ordered_bits(cand), k)


def sample_logits_rows(logits: jax.Array, keys: jax.Array, *, temperature: float,
                       top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Like `sample_logits`, with one PRNG key per row (keys [B, 2]): row b's draw depends only
    on its own logits and key, never on the other rows (guided decoding's per-candidate
    streams)."""
    _check_settings(temperature, top_k, top_p)
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    neg = jnp.finfo(jnp.float32).min
    top_vals = None
    if top_k and top_k < logits.shape[-1]:
        if top_p < 1.0:  # the nucleus needs the sorted top-k values
            top_vals, _ = jax.lax.top_k(logits, top_k)  # [B, k], descending
        logits = jnp.where(top_k_mask(logits, top_k), logits, neg)
    if top_p < 1.0:
        srt = top_vals if top_vals is not None else -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(srt, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted entry
        keep = before < top_p  # the first entry is always kept
        threshold = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return categorical_rows(keys, logits)


CHUNK = 128


def categorical_rows(keys: jax.Array, logits: jax.Array) -> jax.Array:
    """One draw per row from softmax(logits) [B, V], row b with its own key keys[b] -> [B] int32.

    Inverse CDF in two levels (chunk totals of `CHUNK` entries, then within the chosen chunk)
    from ONE uniform number a row: the same distribution as `jax.random.categorical`, without
    its [B, V] Gumbel draws (~20x the cost on CPU, where it ran once per sampled token).
    """
    b, v = logits.shape
    n = -(-v // CHUNK)
    lg = jnp.pad(logits.astype(jnp.float32), ((0, 0), (0, n * CHUNK - v)),
                 constant_values=-jnp.inf)
    p = jnp.exp(lg - jnp.max(lg, axis=-1, keepdims=True)).reshape(b, n, CHUNK)
    cs = jnp.cumsum(p.sum(-1), axis=-1)  # [B, n] cumulative chunk mass
    u = jax.vmap(jax.random.uniform)(keys)[:, None] * cs[:, -1:]  # [B, 1] in [0, total)
    j = jnp.minimum(jnp.sum(cs <= u, axis=-1), n - 1)  # the chunk holding u
    before = jnp.where(j > 0, jnp.take_along_axis(cs, jnp.maximum(j - 1, 0)[:, None], 1)[:, 0],
                       0.0)
    row = jnp.take_along_axis(p, j[:, None, None], 1)[:, 0]  # [B, CHUNK]
    i = jnp.minimum(jnp.sum(before[:, None] + jnp.cumsum(row, -1) <= u, axis=-1), CHUNK - 1)
    idx = j * CHUNK + i
    # float rounding at a chunk's edge can land on a zero-probability entry: take the mode then
    ok = jnp.take_along_axis(row, i[:, None], 1)[:, 0] > 0
    return jnp.where(ok, idx, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


# ----------------------------------------------------------------------------- padding


def bucket_size(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n; beyond the largest, n rounded up to a multiple of it."""
    for b in sorted(buckets):
        if n <= b:
            return int(b)
    top = max(buckets)
    return int(-(-n // top) * top)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int,
                buckets: Sequence[int] = LENGTH_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists to one bucketed length.

    Returns (ids [B, T] int32, mask [B, T] int32 with 1 on real tokens), T = bucket of the
    longest prompt. Every prompt must hold at least one token.
    """
    if not prompts:
        raise ValueError("pad_prompts: no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"pad_prompts: prompt {i} is empty (needs at least one token)")
    t = bucket_size(max(len(p) for p in prompts), buckets)
    ids = np.full((len(prompts), t), pad_id, np.int32)
    mask = np.zeros((len(prompts), t), np.int32)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = np.asarray(p, np.int32)
        mask[i, t - len(p):] = 1
    return ids, mask


# ----------------------------------------------------------------------------- heads


def single_head(model: CausalLM, params, head_weights=None) -> tuple[CausalLM, dict]:
    """(one-head model, params) whose only head is sum_i w_i W_i (w normalised), or head 0
    when `head_weights` is None. Done once, outside any decode loop."""
    kernel = params["heads"]["kernel"]  # [K, D, V]
    k = kernel.shape[0]
    if head_weights is None:
        one = kernel[:1]
    else:
        w = np.asarray(head_weights, np.float32).reshape(-1)
        if w.shape[0] != k:
            raise ValueError(f"head_weights has {w.shape[0]} entries but the model has {k} "
                             f"action head(s)")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"head_weights {w.tolist()} must be >= 0 with a positive sum")
        one = mixed_kernel(kernel, jnp.asarray(w))[None]
    if k == 1 and head_weights is None and model.num_heads == 1:
        return model, params
    return CausalLM(model.cfg, 1), dict(params, heads={"kernel": one})


# ----------------------------------------------------------------------------- jitted pieces


@functools.partial(jax.jit, static_argnames=("model", "cache_len"))
def _prefill(model, params, ids, mask, *, cache_len):
    cache = init_cache(model.cfg, ids.shape[0], cache_len)
    h, cache = model.apply({"params": params}, ids, attention_mask=mask, cache=cache,
                           method=CausalLM.hidden)
    last = model.apply({"params": params}, h[:, -1], method=CausalLM.project)
    return last, cache


def prefill(model: CausalLM, params, ids, mask, cache_len: int, head_weights=None):
    """Encode left-padded prompts ids/mask [B, T] into a fresh cache of `cache_len` slots.

    Returns (logits of the last position [B, V] float32, cache). Only the last position goes
    through the LM head. With `head_weights`, the mixed head is used.
    """
    if cache_len < ids.shape[1]:
        raise ValueError(f"cache_len {cache_len} is shorter than the prompts ({ids.shape[1]})")
    model, params = single_head(model, params, head_weights)
    return _prefill(model, params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
                    cache_len=int(cache_len))


class DecodeOutput(NamedTuple):
    """What `decode_steps` returns."""

    tokens: jax.Array  # [B, n_steps] int32; pad_id after a row is done / past the last step
    cache: KVCache  # every emitted token written (finished rows: invalid slots)
    last_logits: jax.Array  # [B, V] float32 after each row's last emitted token
    done: jax.Array  # [B] bool: started done or emitted a stop id (not set by the limit)
    lengths: jax.Array  # [B] int32, tokens emitted by each row in this call


@functools.partial(
    jax.jit,
    static_argnames=("model", "n_steps", "temperature", "top_k", "top_p", "stop_ids", "pad_id"),
    donate_argnames=("cache",))
def _decode(model, params, cache, last_logits, rng, done, limit, *, n_steps, temperature,
            top_k, top_p, stop_ids, pad_id):
    b = last_logits.shape[0]
    stops = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)
    unrolled_cache = loop_cache(model, cache)  # stacked again after the loop

    def cond(c):
        step, _, _, done, _, _ = c
        return (step < jnp.minimum(limit, n_steps)) & ~jnp.all(done)

    def body(c):
        step, cache, last, done, toks, lengths = c
        live = ~done
        tok = sample_logits(last, jax.random.fold_in(rng, step), temperature=temperature,
                            top_k=top_k, top_p=top_p)
        tok = jnp.where(live, tok, pad_id)
        toks = jax.lax.dynamic_update_slice(toks, tok[:, None], (0, step))
        logits, cache = model.apply({"params": params}, tok[:, None], cache=cache,
                                    attention_mask=live[:, None].astype(jnp.int32))
        last = jnp.where(live[:, None], logits[:, 0], last)
        lengths = lengths + live.astype(jnp.int32)
        hit = jnp.isin(tok, stops) & live
        done = done | hit
        return step + 1, cache, last, done, toks, lengths

    init = (jnp.zeros((), jnp.int32), unrolled_cache, last_logits, done,
            jnp.full((b, n_steps), pad_id, jnp.int32), jnp.zeros((b,), jnp.int32))
    _, cache, last, done, toks, lengths = jax.lax.while_loop(cond, body, init)
    return DecodeOutput(toks, kv_stacked(cache), last, done, lengths)


def decode_steps(model: CausalLM, params, cache: KVCache, last_logits, rng, n_steps: int, *,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 stop_ids: Sequence[int] = (), done=None, limit: Optional[int] = None,
                 pad_id: int = 0, head_weights=None) -> DecodeOutput:
    """Sample up to `n_steps` tokens per row in one jitted `lax.while_loop`.

    cache: from `prefill` / a previous call, with at least `n_steps` free slots; it is DONATED
    (do not use the passed-in cache afterwards). last_logits [B, V]: the logits that predict each
    row's next token. A row becomes done once it emits a token in `stop_ids` (an EOS or a step
    delimiter; the token itself is emitted and written to the cache); `done` [B] bool marks rows
    that start finished. The loop stops when every row is done or after `limit` steps (default
    n_steps; every live row emits one token per step). Step s samples with key fold_in(rng, s),
    split per row. `n_steps` is static; `limit` is traced, so varying it does not recompile.
    """
    b = last_logits.shape[0]
    free = cache.max_len - int(cache.index)
    if n_steps > free:
        raise ValueError(f"decode_steps: n_steps={n_steps} but the cache has {free} free slots")
    model, params = unrolled(*single_head(model, params, head_weights))
    done = jnp.zeros((b,), bool) if done is None else jnp.asarray(done, bool)
    limit = jnp.asarray(n_steps if limit is None else limit, jnp.int32)
    return _decode(model, params, cache, jnp.asarray(last_logits, jnp.float32), rng, done, limit,
                   n_steps=int(n_steps), temperature=float(temperature), top_k=int(top_k),
                   top_p=float(top_p), stop_ids=tuple(sorted(int(s) for s in stop_ids)),
                   pad_id=int(pad_id))


# ----------------------------------------------------------------------------- generate


@dataclasses.dataclass
class GenerationResult:
    """One row's completion. `tokens`: the generated ids (the EOS token included when one ended
    the row); `text`: decoded without special tokens and cut at the first stop string;
    `finish_reason`: "eos", "stop_string" or "length"."""

    tokens: list[int]
    text: str
    finish_reason: str


def _truncate(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    cut = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    return (text[:min(cut)], True) if cut else (text, False)


def generate(model: CausalLM, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             rng: Optional[jax.Array] = None, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, eos_ids: Optional[Sequence[int]] = None, head_weights=None,
             stop_strings: Optional[Sequence[str]] = None, tokenizer=None,
             pad_id: Optional[int] = None,
             batch_buckets: Sequence[int] = BATCH_BUCKETS,
             length_buckets: Sequence[int] = LENGTH_BUCKETS) -> list[GenerationResult]:
    """Complete each prompt (a list of token ids) with up to `max_new_tokens` tokens.

    eos_ids default to the tokenizer's end-of-sequence and end-of-turn ids (none without a
    tokenizer); text is decoded only when a tokenizer is given (else ""). Stop strings are
    applied to the decoded text on the host. See the module docstring for shapes and buckets.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the text")
    if eos_ids is None:
        eos_ids = () if tokenizer is None else tuple(
            i for i in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "im_end_id", None))
            if i is not None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_id", None) if tokenizer is not None else None
        pad_id = 0 if pad_id is None else pad_id
    rng = jax.random.PRNGKey(0) if rng is None else rng

    n = len(prompts)
    ids, mask = pad_prompts(prompts, pad_id, length_buckets)
    b = bucket_size(n, batch_buckets)
    ids = np.concatenate([ids, np.full((b - n, ids.shape[1]), pad_id, np.int32)])
    mask = np.concatenate([mask, np.zeros((b - n, mask.shape[1]), np.int32)])
    n_steps = bucket_size(max_new_tokens, [2 ** i for i in range(4, 16)])

    model1, params1 = single_head(model, params, head_weights)
    last, cache = prefill(model1, params1, ids, mask, ids.shape[1] + n_steps)
    out = decode_steps(model1, params1, cache, last, rng, n_steps, temperature=temperature,
                       top_k=top_k, top_p=top_p, stop_ids=eos_ids, limit=max_new_tokens,
                       done=np.arange(b) >= n, pad_id=pad_id)
    toks, lengths = np.asarray(out.tokens), np.asarray(out.lengths)

    results = []
    eos = set(int(e) for e in eos_ids)
    for r in range(n):
        row = toks[r, :lengths[r]].tolist()
        reason = "eos" if row and row[-1] in eos else "length"
        text = ""
        if tokenizer is not None:
            text = tokenizer.decode(row, skip_special=True)
            text, cut = _truncate(text, stop_strings or ())
            reason = "stop_string" if cut else reason
        results.append(GenerationResult(tokens=row, text=text, finish_reason=reason))
    return results
