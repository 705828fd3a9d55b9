"""The demo's sampler: the trunk cut in two (`models/split.py`), sampling with features for free.

Every policy of the demo shares the frozen lower trunk of the base model and differs only in its
top layers and head. The sampler runs the lower part and the policy's upper part with one KV
cache each and, for every emitted token, keeps the LOWER activations x [D] of that token:

    feat_last [B, D]  x at each row's last emitted token (the prompt's last token before any)
    feat_sum  [B, D]  sum of x over the emitted tokens (divide by `lengths` for the mean)

Those are exactly the features a reward model on the frozen base trunk reads
(`demo/rewards.py`), so the labeller, the judge and the guides score a generation without
re-encoding it, whichever policy wrote it.

`generate` samples (or decodes greedily) whole responses; `guided_generate` is step-level
guided decoding with a continuing cache: K candidate rows per prompt (copies of the prompt's
cache), each samples one step (until a step delimiter, a stop token or `step_tokens`), the
guide scores every candidate from its features, the best candidate's state is copied to all K
rows, and decoding continues. No prefix is ever re-encoded, and all of it runs in one compiled
loop: a prompt's candidates are scored the moment the last of them ends its step, so no prompt
waits for the slowest row of the batch (`_guided`).

All shapes are static per (batch, prompt bucket, slot count): repeated calls reuse the compile.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.decoding.sampling import bucket_size, pad_prompts, sample_logits
from mtalign_jax.models import kv_cache
from mtalign_jax.models.kv_cache import KVCache, init_cache
from mtalign_jax.models.trunk import Trunk
from mtalign_jax.models.unrolled import loop_cache, unrolled


@flax.struct.dataclass
class State:
    """Decoding state of B rows (every leaf has the batch on axis 0, caches on axis 1)."""

    lo: KVCache
    up: KVCache
    last: jax.Array  # [B, V] logits predicting the next token
    done: jax.Array  # [B] bool, finished for good
    feat_last: jax.Array  # [B, D]
    feat_sum: jax.Array  # [B, D]
    lengths: jax.Array  # [B] int32 tokens emitted
    tokens: jax.Array  # [B, N] int32 emitted tokens (pad after)
    xs: jax.Array  # [B, N, D] lower activations of the emitted tokens ([B, 0, D]: not kept)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The policy-specific parts: top-layer params and one [D, V] head (mixed beforehand)."""

    upper_params: dict
    head: jax.Array

    def cast(self, dtype) -> "Policy":
        """This policy with its params stored in `dtype` (the model's compute dtype: decoding
        then reads each weight in that dtype once, rather than converting it every token)."""
        return Policy(*jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype),
                                              (self.upper_params, self.head)))


@functools.partial(jax.jit, static_argnames=("lower", "cache_len"))
def _prefill_lower(lower: Trunk, lo_p, ids, mask, *, cache_len):
    """The frozen lower trunk over left-padded prompts [B, T]: (its cache, x [B, T, D])."""
    c_lo = init_cache(lower.cfg, ids.shape[0], cache_len)
    x, c_lo = lower.apply({"params": lo_p}, ids, attention_mask=mask, cache=c_lo)
    return c_lo, x


@functools.partial(jax.jit, static_argnames=("upper", "n_new", "pad_id", "keep_acts"))
def _prefill_upper(upper: Trunk, up_p, head, c_lo: KVCache, x, mask, done, rows, *, n_new,
                   pad_id, keep_acts=False):
    """A policy's top layers over the shared lower prefill, rows[r] = the prompt of row r
    (so one prompt's lower prefill serves several samples and several policies)."""
    c_lo = c_lo.replace(k=c_lo.k[:, rows], v=c_lo.v[:, rows], valid=c_lo.valid[rows],
                        pos=c_lo.pos[rows])
    x, mask, done = x[rows], mask[rows], done[rows]
    b = x.shape[0]
    c_up = init_cache(upper.cfg, b, c_lo.max_len)
    h, c_up = upper.apply({"params": up_p}, x, attention_mask=mask, cache=c_up)
    last = jnp.dot(h[:, -1], head, preferred_element_type=jnp.float32)
    return State(lo=c_lo, up=c_up, last=last, done=done, feat_last=x[:, -1].astype(jnp.float32),
                 feat_sum=jnp.zeros_like(x[:, -1], jnp.float32),
                 lengths=jnp.zeros((b,), jnp.int32),
                 tokens=jnp.full((b, n_new), pad_id, jnp.int32),
                 xs=jnp.zeros((b, n_new if keep_acts else 0, x.shape[-1]), jnp.float32))


def _advance(lower: Trunk, upper: Trunk, lo_p, up_p, head, s: State, live, key, *,
             temperature, top_k, stops, pad_id) -> tuple[State, jax.Array]:
    """One decode iteration: every live row (live [B] bool) emits a token, the others write a
    masked pad. Returns (the new state, the tokens [B] int32; pad where not live)."""
    b, n_new = s.tokens.shape
    tok = sample_logits(s.last, key, temperature=temperature, top_k=top_k)
    tok = jnp.where(live, tok, pad_id)
    m = live[:, None].astype(jnp.int32)
    x, lo = lower.apply({"params": lo_p}, tok[:, None], attention_mask=m, cache=s.lo)
    h, up = upper.apply({"params": up_p}, x, attention_mask=m, cache=s.up)
    logits = jnp.dot(h[:, 0], head, preferred_element_type=jnp.float32)
    x0 = x[:, 0].astype(jnp.float32)
    col = jnp.where(live, s.lengths, n_new)  # out of range -> dropped
    tokens = s.tokens.at[jnp.arange(b), col].set(tok, mode="drop")
    xs = s.xs.at[jnp.arange(b), col].set(x0, mode="drop") if s.xs.shape[1] else s.xs
    lengths = s.lengths + live.astype(jnp.int32)
    done = s.done | (live & (jnp.isin(tok, stops) | (lengths >= n_new)))
    s = State(lo=lo, up=up, last=jnp.where(live[:, None], logits, s.last), done=done,
              feat_last=jnp.where(live[:, None], x0, s.feat_last),
              feat_sum=s.feat_sum + jnp.where(live[:, None], x0, 0.0),
              lengths=lengths, tokens=tokens, xs=xs)
    return s, tok


def _ids(ids) -> jax.Array:
    return jnp.asarray(ids or (-1,), jnp.int32)


@functools.partial(
    jax.jit, donate_argnames=("state",),
    static_argnames=("lower", "upper", "temperature", "top_k", "stop_ids", "pause_ids",
                     "pad_id"))
def _run(lower: Trunk, upper: Trunk, lo_p, up_p, head, state: State, rng, limit, *,
         temperature, top_k, stop_ids, pause_ids, pad_id):
    """Decode until every row is done or paused (emitted a pause id), or `limit` loop steps.

    lower/upper and lo_p/up_p normally in the unrolled layout (`models/unrolled.py`); the
    state's caches are stacked outside and, for unrolled parts, per-layer inside the loop."""
    b = state.tokens.shape[0]
    state = state.replace(lo=loop_cache(lower, state.lo), up=loop_cache(upper, state.up))
    stops, pauses = _ids(stop_ids), _ids(pause_ids)
    limit = jnp.minimum(limit, state.lo.max_len - state.lo.index)

    def cond(c):
        step, s, paused = c
        return (step < limit) & ~jnp.all(s.done | paused)

    def body(c):
        step, s, paused = c
        live = ~(s.done | paused)
        s, tok = _advance(lower, upper, lo_p, up_p, head, s, live, jax.random.fold_in(rng, step),
                          temperature=temperature, top_k=top_k, stops=stops, pad_id=pad_id)
        return step + 1, s, paused | (live & jnp.isin(tok, pauses))

    _, state, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), state, jnp.zeros((b,), bool)))
    # Out of slots: nothing more can be written, so every row is finished.
    exhausted = state.lo.index >= state.lo.max_len
    return state.replace(done=state.done | exhausted, lo=kv_cache.stacked(state.lo),
                         up=kv_cache.stacked(state.up))


def _copy_window(c: KVCache, src: jax.Array, window: int) -> KVCache:
    """Rows of a per-layer or stacked cache replaced by rows `src` [B], but only in the last
    `window` slots before `c.index` (where rows of one guided group can differ; they are equal
    before) and in the small per-row `valid` / `pos`."""
    window = min(window, c.max_len)
    start = jnp.clip(c.index - window, 0, c.max_len - window)

    def rows(x, axis):  # x [B, ...] per layer or [L, B, ...]; the slot axis at `axis` (< 0)
        win = jax.lax.dynamic_slice_in_dim(x, start, window, axis=axis)
        win = jnp.take(win, src, axis=x.ndim - 4)
        return jax.lax.dynamic_update_slice_in_dim(x, win, start, axis=axis)

    def each(ks, axis):
        return tuple(rows(x, axis) for x in ks) if isinstance(ks, tuple) else rows(ks, axis)

    return c.replace(k=each(c.k, -1), v=each(c.v, -2), valid=jnp.take(c.valid, src, axis=0),
                     pos=jnp.take(c.pos, src, axis=0))


@dataclasses.dataclass
class Samples:
    """Host results for N rows: token lists, decoded texts and the lower-trunk features; with
    `keep_acts`, also every row's prompt ids and the lower activations of its prompt and of its
    emitted tokens (what DPO on the frozen lower trunk reads: no re-encoding of samples)."""

    tokens: list
    texts: list
    feat_last: np.ndarray  # [N, D]
    feat_mean: np.ndarray  # [N, D]
    prompt_ids: Optional[list] = None  # [N] lists of the prompt's token ids
    prompt_x: Optional[list] = None  # [N] arrays [len(prompt), D] (rows of a prompt share one)
    resp_x: Optional[list] = None  # [N] arrays [len(tokens[i]), D]

    def features(self) -> np.ndarray:
        """[N, 2D]: last-token and mean-over-response lower activations (`rewards.py`)."""
        return np.concatenate([self.feat_last, self.feat_mean], axis=1)


def _results(state: State, n: int, tok, prompts=None, prompt_x=None, per: int = 1) -> Samples:
    """The first n rows; `prompts` / `prompt_x` [P, T, D] (left-padded) with `per` rows a prompt
    when the activations were kept."""
    toks, lengths = np.asarray(state.tokens)[:n], np.asarray(state.lengths)[:n]
    rows = [toks[i, :lengths[i]].tolist() for i in range(n)]
    fsum = np.asarray(state.feat_sum)[:n]
    fmean = fsum / np.maximum(lengths, 1)[:, None]
    out = Samples(tokens=rows, texts=[tok.decode(r, skip_special=True) for r in rows],
                  feat_last=np.asarray(state.feat_last)[:n], feat_mean=fmean)
    if prompt_x is not None:
        xs = np.asarray(state.xs)[:n]
        px = np.asarray(prompt_x, np.float32)
        out.prompt_ids = [list(prompts[i // per]) for i in range(n)]
        out.prompt_x = [px[i // per, px.shape[1] - len(prompts[i // per]):] for i in range(n)]
        out.resp_x = [xs[i, :lengths[i]] for i in range(n)]
    return out


PROMPT_BUCKETS = (32, 64, 96, 128, 160)  # left-padded prompt lengths (multiples beyond)
# A batch's cache holds its prompt bucket plus the new tokens, no more: a decode step's cost grows
# with the slots it attends over (one compiled loop per bucket).


def _pad_batch(prompts, pad_id, n_rows):
    """Left-pad prompts to their bucket, then pad the batch to `n_rows` prompts (marked done)."""
    ids, mask = pad_prompts(prompts, pad_id, PROMPT_BUCKETS)
    n = len(prompts)
    ids = np.concatenate([ids, np.full((n_rows - n, ids.shape[1]), pad_id, np.int32)])
    mask = np.concatenate([mask, np.zeros((n_rows - n, mask.shape[1]), np.int32)])
    return ids, mask, np.arange(n_rows) >= n


def _concat(parts: Sequence[Samples]) -> Samples:
    cat = lambda f: (None if getattr(parts[0], f) is None  # noqa: E731
                     else sum((getattr(s, f) for s in parts), []))
    return Samples(tokens=cat("tokens"), texts=cat("texts"),
                   feat_last=np.concatenate([s.feat_last for s in parts]),
                   feat_mean=np.concatenate([s.feat_mean for s in parts]),
                   prompt_ids=cat("prompt_ids"), prompt_x=cat("prompt_x"), resp_x=cat("resp_x"))


def generate_many(lower, upper, lo_p, policies: dict, tok, prompts: Sequence[Sequence[int]], *,
                  max_new_tokens: int, rng, n: int = 1, temperature: float = 0.0,
                  top_k: int = 0, batch_size: int = 64, keep_acts: bool = False,
                  progress: Optional[Callable] = None) -> dict:
    """Complete every prompt (token ids) `n` times under each policy {name: Policy}.

    Batches of `batch_size // n` prompts: the frozen lower trunk prefills a batch once, and
    every policy and every one of the n samples continues from that prefill (rows of one
    prompt are adjacent: row i*n + j is sample j of prompt i). Returns {name: Samples}
    (`keep_acts`: with the prompts' and samples' lower activations, `Samples`).
    """
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} is not a multiple of n={n}")
    per = batch_size // n
    stop = tuple(sorted({tok.eos_id, tok.im_end_id}))
    out = {name: [] for name in policies}
    rows = jnp.asarray(np.repeat(np.arange(per), n))
    lower_u, lo_pu = unrolled(lower, lo_p)
    policies = {name: pol.cast(upper.cfg.dtype) for name, pol in policies.items()}
    uppers = {name: unrolled(upper, pol.upper_params) for name, pol in policies.items()}
    for i in range(0, len(prompts), per):
        chunk = prompts[i:i + per]
        ids, mask, done = _pad_batch(chunk, tok.pad_id, per)
        c_lo, x = _prefill_lower(lower, lo_p, ids, mask, cache_len=ids.shape[1] + max_new_tokens)
        for pi, (name, pol) in enumerate(policies.items()):
            state = _prefill_upper(upper, pol.upper_params, pol.head, c_lo, x, mask,
                                   jnp.asarray(done), rows, n_new=max_new_tokens,
                                   pad_id=tok.pad_id, keep_acts=keep_acts)
            upper_u, up_pu = uppers[name]
            state = _run(lower_u, upper_u, lo_pu, up_pu, pol.head, state,
                         jax.random.fold_in(rng, i), jnp.asarray(max_new_tokens, jnp.int32),
                         temperature=float(temperature), top_k=int(top_k), stop_ids=stop,
                         pause_ids=(), pad_id=tok.pad_id)
            out[name].append(_results(state, len(chunk) * n, tok, chunk,
                                      x if keep_acts else None, n))
            if progress:
                progress(len(chunk))
    return {name: _concat(parts) for name, parts in out.items()}


def generate(lower, upper, lo_p, policy: Policy, tok, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, rng, n: int = 1, temperature: float = 0.0, top_k: int = 0,
             batch_size: int = 64, keep_acts: bool = False,
             progress: Optional[Callable] = None) -> Samples:
    """`generate_many` with one policy."""
    return generate_many(lower, upper, lo_p, {"policy": policy}, tok, prompts,
                         max_new_tokens=max_new_tokens, rng=rng, n=n, temperature=temperature,
                         top_k=top_k, batch_size=batch_size, keep_acts=keep_acts,
                         progress=progress)["policy"]


def step_delimiters(tok) -> tuple[int, ...]:
    """Token ids that end a step: their text ends with a newline or a sentence end."""
    ends = ("\n", ".", "!", "?")
    return tuple(i for i in range(tok.vocab_size)
                 if tok.decode([i], skip_special=True).rstrip(" ").endswith(ends))


def _select(s: State, ready, *, w, w0, k: int, window: int) -> State:
    """Within each ready group (ready [G] bool; rows g*k .. g*k+k-1), every row becomes a copy of
    the row the guide scores highest (features [B, 2D] @ w + w0); the other groups are left as
    they are. The caches are copied in the last `window` slots only (`_copy_window`)."""
    b = s.tokens.shape[0]
    g = b // k
    mean = s.feat_sum / jnp.maximum(s.lengths, 1)[:, None].astype(jnp.float32)
    score = (jnp.concatenate([s.feat_last, mean], axis=1) @ w + w0).reshape(g, k)
    best = jnp.arange(g) * k + jnp.argmax(score, axis=1)
    src = jnp.where(_per_row(ready, k), _per_row(best, k), jnp.arange(b))
    return _take_rows(s, src).replace(lo=_copy_window(s.lo, src, window),
                                      up=_copy_window(s.up, src, window))


def _per_row(x: jax.Array, k: int) -> jax.Array:
    """[G] -> [G * k]: each group's value on its k rows."""
    return jnp.repeat(x, k, total_repeat_length=x.shape[0] * k)


def _take_rows(s: State, rows: jax.Array) -> State:
    """The state of rows `rows` [R] (indices into its B rows); the caches are left as they are."""
    fields = [f.name for f in dataclasses.fields(State) if f.name not in ("lo", "up")]
    return s.replace(**{f: jnp.take(getattr(s, f), rows, axis=0) for f in fields})


@functools.partial(
    jax.jit, static_argnames=("lower", "upper", "k", "step_tokens", "temperature", "top_k",
                              "stop_ids", "pause_ids", "pad_id"))
def _guided(lower: Trunk, upper: Trunk, lo_p, up_p, head, guide_w, guide_b, state: State, rng,
            *, k, step_tokens, temperature, top_k, stop_ids, pause_ids, pad_id):
    """Guided decoding of B = G x k rows (row g*k + j: candidate j of prompt g) to the end, in
    one compiled loop.

    A row pauses at a step delimiter (`pause_ids`) or after `step_tokens` tokens of its step.
    As soon as every row of a group is paused or done, the guide scores the k candidates
    (features [k, 2D] @ guide_w [2D] + guide_b), the best one's state is copied to the k rows
    (its KV cache only in the last `step_tokens` slots, the only ones where they differ) and
    they go on; a group never waits for the other groups. A group whose selected row is done
    is final. Returns (the G result rows g*k, caches dropped; selections [G] int32).
    """
    b = state.tokens.shape[0]
    g = b // k
    state = state.replace(lo=loop_cache(lower, state.lo), up=loop_cache(upper, state.up))
    stops, pauses = _ids(stop_ids), _ids(pause_ids)
    w, w0 = guide_w.astype(jnp.float32), guide_b.astype(jnp.float32)
    limit = state.lo.max_len - state.lo.index  # free slots

    def maybe_select(s: State, ready):
        select = functools.partial(_select, w=w, w0=w0, k=k, window=step_tokens)
        return jax.lax.cond(jnp.any(ready), select, lambda s, r: s, s, ready)

    def cond(c):
        step, s, paused, steplen, final, nsel = c
        return (step < limit) & ~jnp.all(final)

    def body(c):
        step, s, paused, steplen, final, nsel = c
        live = ~(s.done | paused)
        s, tok = _advance(lower, upper, lo_p, up_p, head, s, live, jax.random.fold_in(rng, step),
                          temperature=temperature, top_k=top_k, stops=stops, pad_id=pad_id)
        steplen = steplen + live.astype(jnp.int32)
        paused = paused | (live & (jnp.isin(tok, pauses) | (steplen >= step_tokens)))
        ready = (s.done | paused).reshape(g, k).all(axis=1) & ~final
        s = maybe_select(s, ready)
        again = _per_row(ready, k)  # the selected groups' rows start a new step
        final = final | (ready & s.done.reshape(g, k).all(axis=1))
        return (step + 1, s, paused & ~again, jnp.where(again, 0, steplen), final,
                nsel + ready.astype(jnp.int32))

    final0 = state.done.reshape(g, k).all(axis=1)  # padding prompts
    zeros = jnp.zeros((b,), jnp.int32)
    _, state, _, _, final, nsel = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), state, zeros.astype(bool), zeros, final0,
                     jnp.zeros((g,), jnp.int32)))
    rest = ~final  # out of slots: the best candidate so far
    state = maybe_select(state, rest)
    out = _take_rows(state, jnp.arange(g) * k).replace(lo=None, up=None)
    return out, nsel + rest.astype(jnp.int32)


def guided_generate(lower, upper, lo_p, policy: Policy, tok, prompts, *, guide, k: int,
                    max_new_tokens: int, step_tokens: int, rng, pause_ids,
                    temperature: float = 1.0, top_k: int = 50, batch_size: int = 16,
                    progress: Optional[Callable] = None) -> tuple[Samples, int]:
    """Step-level guided decoding with a continuing cache (module docstring, `_guided`).

    guide: a linear score of the features, `guide.w` [2D] and `guide.b` (e.g.
    `rewards.LinearScore`): higher is better. `batch_size` prompts at a time (k rows each).
    Returns (one completion per prompt, the number of guided steps summed over the prompts).
    """
    stop = tuple(sorted({tok.eos_id, tok.im_end_id}))
    slots = 2 * max_new_tokens  # every loop iteration takes a slot, also for paused rows
    gw, gb = jnp.asarray(guide.w, jnp.float32), jnp.asarray(guide.b, jnp.float32)
    outs, n_steps = [], 0
    lower_u, lo_pu = unrolled(lower, lo_p)
    policy = policy.cast(upper.cfg.dtype)
    upper_u, up_pu = unrolled(upper, policy.upper_params)
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids, mask, done = _pad_batch(chunk, tok.pad_id, batch_size)
        b = ids.shape[0]
        c_lo, x = _prefill_lower(lower, lo_p, ids, mask, cache_len=ids.shape[1] + slots)
        state = _prefill_upper(upper, policy.upper_params, policy.head, c_lo, x, mask,
                               jnp.asarray(done), jnp.repeat(jnp.arange(b), k),
                               n_new=max_new_tokens, pad_id=tok.pad_id)  # K copies of a prompt
        one, nsel = _guided(lower_u, upper_u, lo_pu, up_pu, policy.head, gw, gb, state,
                            jax.random.fold_in(rng, i), k=k, step_tokens=step_tokens,
                            temperature=float(temperature), top_k=int(top_k), stop_ids=stop,
                            pause_ids=tuple(pause_ids), pad_id=tok.pad_id)
        n_steps += int(np.sum(np.asarray(nsel)[:len(chunk)]))
        outs.append(_results(one, len(chunk), tok))
        if progress:
            progress(len(chunk))
    return _concat(outs), n_steps
