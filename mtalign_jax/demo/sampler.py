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
rows, and decoding continues. No prefix is ever re-encoded.

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
from mtalign_jax.models.kv_cache import KVCache, init_cache
from mtalign_jax.models.split import TrunkPart


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


@dataclasses.dataclass(frozen=True)
class Policy:
    """The policy-specific parts: top-layer params and one [D, V] head (mixed beforehand)."""

    upper_params: dict
    head: jax.Array


@functools.partial(jax.jit, static_argnames=("lower", "upper", "n_new", "slots", "pad_id"))
def _prefill(lower: TrunkPart, upper: TrunkPart, lo_p, up_p, head, ids, mask, done, *,
             n_new, slots, pad_id):
    b, t = ids.shape
    c_lo = init_cache(lower.cfg, b, t + slots)
    c_up = init_cache(upper.cfg, b, t + slots)
    x, c_lo = lower.apply({"params": lo_p}, ids, attention_mask=mask, cache=c_lo)
    h, c_up = upper.apply({"params": up_p}, x, attention_mask=mask, cache=c_up)
    last = jnp.dot(h[:, -1], head, preferred_element_type=jnp.float32)
    return State(lo=c_lo, up=c_up, last=last, done=done, feat_last=x[:, -1].astype(jnp.float32),
                 feat_sum=jnp.zeros_like(x[:, -1], jnp.float32),
                 lengths=jnp.zeros((b,), jnp.int32),
                 tokens=jnp.full((b, n_new), pad_id, jnp.int32))


@functools.partial(
    jax.jit, donate_argnames=("state",),
    static_argnames=("lower", "upper", "temperature", "top_k", "stop_ids", "pause_ids",
                     "pad_id"))
def _run(lower: TrunkPart, upper: TrunkPart, lo_p, up_p, head, state: State, rng, limit, *,
         temperature, top_k, stop_ids, pause_ids, pad_id):
    """Decode until every row is done or paused (emitted a pause id), or `limit` loop steps."""
    b, n_new = state.tokens.shape
    stops = jnp.asarray(stop_ids or (-1,), jnp.int32)
    pauses = jnp.asarray(pause_ids or (-1,), jnp.int32)
    free = state.lo.max_len - state.lo.index
    limit = jnp.minimum(limit, free)

    def cond(c):
        step, s, paused = c
        return (step < limit) & ~jnp.all(s.done | paused)

    def body(c):
        step, s, paused = c
        live = ~(s.done | paused)
        tok = sample_logits(s.last, jax.random.fold_in(rng, step), temperature=temperature,
                            top_k=top_k)
        tok = jnp.where(live, tok, pad_id)
        m = live[:, None].astype(jnp.int32)
        x, lo = lower.apply({"params": lo_p}, tok[:, None], attention_mask=m, cache=s.lo)
        h, up = upper.apply({"params": up_p}, x, attention_mask=m, cache=s.up)
        logits = jnp.dot(h[:, 0], head, preferred_element_type=jnp.float32)
        x0 = x[:, 0].astype(jnp.float32)
        col = jnp.where(live, s.lengths, n_new)  # out of range -> dropped
        tokens = s.tokens.at[jnp.arange(b), col].set(tok, mode="drop")
        lengths = s.lengths + live.astype(jnp.int32)
        done = s.done | (live & (jnp.isin(tok, stops) | (lengths >= n_new)))
        paused = paused | (live & jnp.isin(tok, pauses))
        s = State(lo=lo, up=up, last=jnp.where(live[:, None], logits, s.last), done=done,
                  feat_last=jnp.where(live[:, None], x0, s.feat_last),
                  feat_sum=s.feat_sum + jnp.where(live[:, None], x0, 0.0),
                  lengths=lengths, tokens=tokens)
        return step + 1, s, paused

    _, state, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), state, jnp.zeros((b,), bool)))
    # Out of slots: nothing more can be written, so every row is finished.
    exhausted = state.lo.index >= state.lo.max_len
    return state.replace(done=state.done | exhausted)


def _take_rows(state: State, rows: jax.Array) -> State:
    take = lambda x, axis: jnp.take(x, rows, axis=axis)  # noqa: E731
    cache = lambda c: c.replace(k=take(c.k, 1), v=take(c.v, 1), valid=take(c.valid, 0),  # noqa
                                pos=take(c.pos, 0))
    return state.replace(lo=cache(state.lo), up=cache(state.up), last=take(state.last, 0),
                         done=take(state.done, 0), feat_last=take(state.feat_last, 0),
                         feat_sum=take(state.feat_sum, 0), lengths=take(state.lengths, 0),
                         tokens=take(state.tokens, 0))


_take_rows_jit = jax.jit(_take_rows)  # shapes change (repeat): nothing to donate


@dataclasses.dataclass
class Samples:
    """Host results for N rows: token lists, decoded texts and the lower-trunk features."""

    tokens: list
    texts: list
    feat_last: np.ndarray  # [N, D]
    feat_mean: np.ndarray  # [N, D]

    def features(self) -> np.ndarray:
        """[N, 2D]: last-token and mean-over-response lower activations (`rewards.py`)."""
        return np.concatenate([self.feat_last, self.feat_mean], axis=1)


def _results(state: State, n: int, tok) -> Samples:
    toks, lengths = np.asarray(state.tokens)[:n], np.asarray(state.lengths)[:n]
    rows = [toks[i, :lengths[i]].tolist() for i in range(n)]
    fsum = np.asarray(state.feat_sum)[:n]
    fmean = fsum / np.maximum(lengths, 1)[:, None]
    return Samples(tokens=rows, texts=[tok.decode(r, skip_special=True) for r in rows],
                   feat_last=np.asarray(state.feat_last)[:n], feat_mean=fmean)


PROMPT_BUCKET = 128  # one prompt length (a multiple for longer batches): one compile


def _pad_batch(prompts, pad_id, batch_size):
    ids, mask = pad_prompts(prompts, pad_id, (PROMPT_BUCKET,))
    n = len(prompts)
    b = bucket_size(n, (batch_size,)) if n <= batch_size else n
    ids = np.concatenate([ids, np.full((b - n, ids.shape[1]), pad_id, np.int32)])
    mask = np.concatenate([mask, np.zeros((b - n, mask.shape[1]), np.int32)])
    return ids, mask, np.arange(b) >= n


def generate(lower, upper, lo_p, policy: Policy, tok, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, rng, temperature: float = 0.0, top_k: int = 0,
             batch_size: int = 64, progress: Optional[Callable] = None) -> Samples:
    """Complete every prompt (token ids) in batches of `batch_size` rows (the last one padded)."""
    stop = (tok.eos_id, tok.im_end_id)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids, mask, done = _pad_batch(chunk, tok.pad_id, batch_size)
        state = _prefill(lower, upper, lo_p, policy.upper_params, policy.head, ids, mask,
                         jnp.asarray(done), n_new=max_new_tokens, slots=max_new_tokens,
                         pad_id=tok.pad_id)
        state = _run(lower, upper, lo_p, policy.upper_params, policy.head, state,
                     jax.random.fold_in(rng, i), jnp.asarray(max_new_tokens, jnp.int32),
                     temperature=float(temperature), top_k=int(top_k),
                     stop_ids=tuple(sorted(set(stop))), pause_ids=(), pad_id=tok.pad_id)
        out.append(_results(state, len(chunk), tok))
        if progress:
            progress(len(chunk))
    return Samples(tokens=sum((s.tokens for s in out), []), texts=sum((s.texts for s in out), []),
                   feat_last=np.concatenate([s.feat_last for s in out]),
                   feat_mean=np.concatenate([s.feat_mean for s in out]))


def step_delimiters(tok) -> tuple[int, ...]:
    """Token ids that end a step: their text ends with a newline or a sentence end."""
    ends = ("\n", ".", "!", "?")
    return tuple(i for i in range(tok.vocab_size)
                 if tok.decode([i], skip_special=True).rstrip(" ").endswith(ends))


def guided_generate(lower, upper, lo_p, policy: Policy, tok, prompts, *, guide: Callable,
                    k: int, max_new_tokens: int, step_tokens: int, rng, pause_ids,
                    temperature: float = 1.0, top_k: int = 50, batch_size: int = 16,
                    progress: Optional[Callable] = None) -> tuple[Samples, int]:
    """Step-level guided decoding with a continuing cache (module docstring).

    guide(features [R, 2D]) -> scores [R] (higher is better). `batch_size` prompts at a time
    (k rows each). Returns (one completion per prompt, number of guided steps taken).
    """
    stop = tuple(sorted({tok.eos_id, tok.im_end_id}))
    slots = 2 * max_new_tokens  # rows advance unevenly between selections
    outs, n_steps = [], 0
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids, mask, done = _pad_batch(chunk, tok.pad_id, batch_size)
        b = ids.shape[0]
        state = _prefill(lower, upper, lo_p, policy.upper_params, policy.head, ids, mask,
                         jnp.asarray(done), n_new=max_new_tokens, slots=slots, pad_id=tok.pad_id)
        state = _take_rows_jit(state, jnp.repeat(jnp.arange(b), k))  # K copies of each prompt
        step = 0
        while not bool(jnp.all(state.done)):
            state = _run(lower, upper, lo_p, policy.upper_params, policy.head, state,
                         jax.random.fold_in(jax.random.fold_in(rng, i), step),
                         jnp.asarray(step_tokens, jnp.int32), temperature=float(temperature),
                         top_k=int(top_k), stop_ids=stop, pause_ids=tuple(pause_ids),
                         pad_id=tok.pad_id)
            lengths = np.maximum(np.asarray(state.lengths), 1)[:, None]
            feats = np.concatenate([np.asarray(state.feat_last),
                                    np.asarray(state.feat_sum) / lengths], axis=1)
            scores = np.asarray(guide(feats), np.float64).reshape(b, k)
            best = np.arange(b) * k + np.argmax(scores, axis=1)
            state = _take_rows_jit(state, jnp.asarray(np.repeat(best, k)))
            step += 1
        n_steps += step
        one = _take_rows_jit(state, jnp.arange(b) * k)
        outs.append(_results(one, len(chunk), tok))
        if progress:
            progress(len(chunk))
    return Samples(tokens=sum((s.tokens for s in outs), []), texts=sum((s.texts for s in outs), []),
                   feat_last=np.concatenate([s.feat_last for s in outs]),
                   feat_mean=np.concatenate([s.feat_mean for s in outs])), n_steps
