"""PRM-guided decoding with a continuing KV cache (PAPER.md section 4), and its baselines.

    results = guided_generate(model, params, tok, [tok.encode_chat(msgs)], guide=guide,
                              guide_prompts=["What is 2+3?"], domain="math", rng=key)
    results[0].text, results[0].steps, results[0].trace   # trace: per-step scores and choice

The prompts are encoded ONCE (one prefill). Each step then:
  1. repeats the policy cache K times (`kv_cache.repeat`; rows b*K .. b*K+K-1 belong to prompt b),
  2. samples K candidate steps per prompt in one jitted on-device loop over all B*K rows
     (temperature / top-k / top-p; a row stops at EOS, at the domain's step boundary, or at its
     per-step token cap), each candidate with its own PRNG stream,
  3. scores the candidates with the guide (a step PRM, a value model, an outcome RM on the
     partial text, or a weighted combination; guides re-tokenise text, as the paper's do),
  4. keeps the best candidate of each prompt (argmax, or sampling by softmax(score / tau)):
     `kv_cache.gather` of the winners' rows, then each row's slots are rolled so its content
     ends at the shared write index (so the cache never grows by more than the tokens kept),
  5. continues from the winners' cache and last logits. The policy never re-reads its prefix.
Decoding stops at EOS, at a final-answer marker (`\\boxed{` in the last step, math), at a step
cap or at a token cap.

Edge rules (the paper's code): a candidate whose text is empty (blank) is resampled, at most
3K samples per prompt and step; a candidate that is only EOS is never chosen unless every
candidate is EOS-only, and then the prompt stops; the step's boundary token stays in the cache
while the step's text is cut right after its first blank line (math).

Domains (`DOMAINS`): math (a step ends on the token that completes the first blank line of the
new text, `segment.completes_blank_line`; <= 512 tokens; 20 steps; 4000 tokens; stop at
`\\boxed{`), dialogue (a chunk ends on a token ending a sentence [.!?] or a paragraph, after at
least 8 tokens; <= 256 tokens; 100 chunks; 1024 tokens), turn (one whole turn: best-of-K
reranking, used for tutoring and for best-of-N). The dialogue rule is the streaming form of
`segment.segment_sentences` (it cannot look at abbreviations such as "e.g." that the text
rule skips).

Prefix modes (`prefix=`): "cache" (the method), "reencode" (every step re-encodes the full
prefix from the SAME token ids: the reference the cache path is checked and benchmarked against;
same keys, so the same tokens up to float rounding), "text" (the paper's text-chunk baseline:
every step re-tokenises the decoded text), "reencode_each" (as "reencode", but the prefix is
encoded once per candidate, K rows per prompt, the way the paper's code calls `generate` with
`num_return_sequences=K`: the baseline the paper's 4.2-4.9x speed-up is measured against).
`sample_plain` is plain sampling / greedy.

PRNG streams: prompt p has key k_p (`rng` folded with p, or given per prompt). Token j of a
step for candidate k, attempt a, at step t uses fold_in(c, n + j) where n is the number of
tokens the prompt has kept so far and c = k_p for (k, a) = (0, 0) and fold_in(fold_in(fold_in(
k_p, t + 1), k), a) otherwise. So candidate 0's first attempt follows the plain sampling stream
of `sample_plain` (K=1 guided decoding reproduces plain sampling token for token), while the
other candidates and resampling attempts draw fresh keys every step. (Candidate 0 may reuse
the noise at positions a losing candidate 0 already drew: a minor correlation, the price of
the K=1 identity.)

Static shapes: prompts are left-padded to a length bucket, the prompt batch to a batch bucket
(dummy prompts start finished), the per-step loop bound is a power-of-two bucket of the step
cap, and caps are traced; the candidate cache is donated to the sampling loop and to the
selection.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.decoding.sampling import (BATCH_BUCKETS, LENGTH_BUCKETS, bucket_size,
                                           pad_prompts, prefill, sample_logits_rows,
                                           single_head)
from mtalign_jax.models import kv_cache as kvc
from mtalign_jax.models.model import CausalLM
from mtalign_jax.models.unrolled import loop_cache, unrolled

ANSWER_MARKER = "\\boxed{"
PREFIX_MODES = ("cache", "reencode", "reencode_each", "text")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*[ \t]*$")

# A guide scores the LAST step of each row: (prompts [N] (str or messages), steps [N] lists of
# step texts, the candidate last) -> scores [N] float (higher is better).
Guide = Callable[[Sequence, Sequence[Sequence[str]]], np.ndarray]


# ----------------------------------------------------------------------------- domains


@dataclasses.dataclass(frozen=True)
class Domain:
    """Step rule and limits of a domain (PAPER.md 4.2 / 7.4)."""

    name: str
    boundary: str  # "blank_line" | "sentence" | "none"
    max_step_tokens: int
    max_steps: int
    max_new_tokens: int
    min_step_tokens: int = 1
    stop_marker: str = ""  # stop after the step that holds it


DOMAINS = {
    "math": Domain("math", "blank_line", 512, 20, 4000, 1, ANSWER_MARKER),
    "dialogue": Domain("dialogue", "sentence", 256, 100, 1024, 8),
    "turn": Domain("turn", "none", 300, 1, 300),
}


def get_domain(domain, **overrides) -> Domain:
    d = DOMAINS[domain] if isinstance(domain, str) else domain
    if isinstance(domain, str) and domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return dataclasses.replace(d, **{k: v for k, v in overrides.items() if v is not None})


@functools.lru_cache(maxsize=8)
def _tables_cached(tokenizer, boundary: str):
    v = tokenizer.vocab_size
    a, b, c = np.zeros(v, bool), np.zeros(v, bool), np.zeros(v, bool)
    if boundary == "none":
        return a, b, c
    from mtalign_jax.data.segment import math_boundary_token_ids

    bt = math_boundary_token_ids(tokenizer)
    a[bt.double_newline], b[bt.ends_newline], c[bt.starts_newline] = True, True, True
    if boundary == "sentence":
        for i in range(v):
            try:
                text = tokenizer.decode([i])
            except Exception:  # noqa: BLE001 (ids that do not decode alone)
                continue
            if _SENTENCE_END.search(text):
                a[i] = True
    elif boundary != "blank_line":
        raise ValueError(f"unknown boundary rule {boundary!r} (blank_line, sentence, none)")
    return a, b, c


def boundary_tables(tokenizer, boundary: str):
    """Bool tables [V] (fires, ends_newline, starts_newline): token t ends a step when
    fires[t], or when ends_newline[prev] and starts_newline[t] (a blank line split over two
    tokens of the new text)."""
    try:
        return _tables_cached(tokenizer, boundary)
    except TypeError:  # unhashable tokenizer
        return _tables_cached.__wrapped__(tokenizer, boundary)


# ----------------------------------------------------------------------------- PRNG streams


def prompt_keys(rng, n: int) -> np.ndarray:
    """Keys [n, 2] uint32: one key per prompt (`rng` folded with the index, or given [n, 2])."""
    if jax.dtypes.issubdtype(getattr(rng, "dtype", np.uint32), jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    rng = np.asarray(rng)
    if rng.ndim == 2:
        if rng.shape[0] != n:
            raise ValueError(f"{rng.shape[0]} prompt keys for {n} prompts")
        return rng.astype(np.uint32)
    return np.asarray(jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(n)), np.uint32)


@jax.jit
def _candidate_keys(pkeys, step, cand, attempt):
    """pkeys [R, 2] (each row's prompt key), cand / attempt [R] -> keys [R, 2] (module doc)."""
    def one(k, c, a):
        fresh = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(k, step + 1), c), a)
        return jnp.where((c == 0) & (a == 0), k, fresh)
    return jax.vmap(one)(pkeys, cand, attempt)


# ----------------------------------------------------------------------------- jitted pieces


@functools.partial(
    jax.jit,
    static_argnames=("model", "n_steps", "temperature", "top_k", "top_p", "stop_ids", "pad_id",
                     "min_tokens"),
    donate_argnames=("cache",))
def _sample_step(model, params, cache, last, keys, offsets, done, row_limit, fires, ends_nl,
                 starts_nl, *, n_steps, temperature, top_k, top_p, stop_ids, pad_id, min_tokens):
    """Sample one step for every row. keys [B, 2], offsets [B] (tokens kept so far), done [B],
    row_limit [B] (max tokens this step). Returns (tokens [B, n_steps], cache, last [B, V],
    eos [B], boundary [B], lengths [B])."""
    b = last.shape[0]
    stops = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)
    cache = loop_cache(model, cache)  # per-layer in the loop when the model is unrolled

    def live_of(finished, lengths):
        return ~finished & (lengths < row_limit)

    def cond(c):
        step, _, _, finished, _, _, lengths, _, _ = c
        return (step < n_steps) & jnp.any(live_of(finished, lengths))

    def body(c):
        step, cache, last, finished, prev, toks, lengths, eos, bnd = c
        live = live_of(finished, lengths)
        tk = jax.vmap(jax.random.fold_in)(keys, offsets + lengths)
        tok = sample_logits_rows(last, tk, temperature=temperature, top_k=top_k, top_p=top_p)
        tok = jnp.where(live, tok, pad_id)
        toks = jax.lax.dynamic_update_slice(toks, tok[:, None], (0, step))
        logits, cache = model.apply({"params": params}, tok[:, None], cache=cache,
                                    attention_mask=live[:, None].astype(jnp.int32))
        last = jnp.where(live[:, None], logits[:, 0], last)
        lengths = lengths + live.astype(jnp.int32)
        hit_eos = jnp.isin(tok, stops) & live
        pair = (prev >= 0) & ends_nl[jnp.maximum(prev, 0)] & starts_nl[tok]
        hit_bnd = (fires[tok] | pair) & (lengths >= min_tokens) & live & ~hit_eos
        prev = jnp.where(live, tok, prev)
        return (step + 1, cache, last, finished | hit_eos | hit_bnd, prev, toks, lengths,
                eos | hit_eos, bnd | hit_bnd)

    zeros = jnp.zeros((b,), bool)
    init = (jnp.zeros((), jnp.int32), cache, last, done, jnp.full((b,), -1, jnp.int32),
            jnp.full((b, n_steps), pad_id, jnp.int32), jnp.zeros((b,), jnp.int32), zeros, zeros)
    _, cache, last, _, _, toks, lengths, eos, bnd = jax.lax.while_loop(cond, body, init)
    return toks, kvc.stacked(cache), last, eos, bnd, lengths


@functools.partial(jax.jit, static_argnames=("k",))
def _repeat(cache, last, k):
    return kvc.repeat(cache, k), jnp.repeat(last, k, axis=0)


def _rows_where(take, old, new, axis: int):
    shape = [1] * old.ndim
    shape[axis] = -1
    return jnp.where(take.reshape(shape), new, old)


@functools.partial(jax.jit, donate_argnames=("cache",))
def _merge(cache, last, new_cache, new_last, take):
    """Rows `take` [B] bool from the new sample, others from the old (same prefix, same S)."""
    merged = kvc.KVCache(k=_rows_where(take, cache.k, new_cache.k, 1),
                         v=_rows_where(take, cache.v, new_cache.v, 1),
                         valid=_rows_where(take, cache.valid, new_cache.valid, 0),
                         pos=_rows_where(take, cache.pos, new_cache.pos, 0),
                         index=jnp.maximum(cache.index, new_cache.index))
    return merged, _rows_where(take, last, new_last, 0)


@jax.jit
def _select(cache, last, rows, shift, new_index):
    """Winner rows [B'] of the candidate cache, each rolled right by shift [B'] slots (content
    ends at new_index), and their last logits."""
    c = kvc.gather(cache, rows)
    s = c.max_len
    src = (jnp.arange(s)[None, :] - shift[:, None]) % s  # [B', S]: new slot <- old slot
    k_idx = jnp.broadcast_to(src[None, :, None, None, :], c.k.shape)
    v_idx = jnp.broadcast_to(src[None, :, None, :, None], c.v.shape)
    out = kvc.KVCache(k=jnp.take_along_axis(c.k, k_idx, axis=4),
                      v=jnp.take_along_axis(c.v, v_idx, axis=3),
                      valid=jnp.take_along_axis(c.valid, src, axis=1),
                      pos=c.pos, index=jnp.asarray(new_index, jnp.int32))
    return out, jnp.take(last, rows, axis=0)


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class StepRecord:
    """One decoding step of one prompt: candidate texts, their scores, the chosen index."""

    candidates: list[str]
    scores: list[float]
    chosen: int
    lengths: list[int]
    logits: Optional[np.ndarray] = None  # [V] after the chosen step (record_logits=True)


@dataclasses.dataclass
class GuidedResult:
    """One prompt's completion. `tokens`: every kept token (boundary tokens and the final EOS
    included); `steps`: the kept steps' texts (`"".join(steps) == text`); `finish_reason`:
    "eos", "answer", "steps", "length" or "empty"; `sampled_tokens`: all candidate tokens."""

    tokens: list[int]
    text: str
    steps: list[str]
    finish_reason: str
    trace: list[StepRecord]
    sampled_tokens: int = 0


# ----------------------------------------------------------------------------- guides


class RewardGuide:
    """A reward model of `eval/scoring.py` as a guide.

    mode "step" (PRM / value model): the score at the last step of (prompt, steps);
    mode "outcome" (RM / classifier): the final score of the joined partial text.
    Default: "step" for kinds prm and value, else "outcome".
    """

    def __init__(self, rm, mode: Optional[str] = None, objective: Optional[str] = None):
        self.rm, self.objective = rm, objective
        self.mode = mode or ("step" if rm.kind in ("prm", "value") else "outcome")
        if self.mode not in ("step", "outcome"):
            raise ValueError(f"guide mode {self.mode!r} (step, outcome)")

    def __call__(self, prompts, steps) -> np.ndarray:
        from mtalign_jax.eval import scoring

        if self.mode == "step":
            per = scoring.score_steps(self.rm, prompts, steps, objective=self.objective)
            return np.asarray([p[-1] for p in per], np.float32)
        return np.asarray(scoring.score_texts(self.rm, prompts, ["".join(s) for s in steps],
                                              objective=self.objective), np.float32)


class CombinedGuide:
    """sum_i w_i guide_i (weights normalised; `scoring.combine`)."""

    def __init__(self, guides: Sequence[Guide], weights: Optional[Sequence[float]] = None):
        self.guides = list(guides)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.guides)

    def __call__(self, prompts, steps) -> np.ndarray:
        from mtalign_jax.eval.scoring import combine

        return combine([g(prompts, steps) for g in self.guides], self.weights)


def load_guide(prms: Sequence[str], weights: Optional[Sequence[float]] = None,
               objective: Optional[str] = None) -> Guide:
    """A guide from reward-model paths (`scoring.load_reward_model`), combined by `weights`."""
    from mtalign_jax.eval.scoring import load_reward_model

    if isinstance(prms, str):
        prms = [p for p in prms.split(",") if p]
    if weights is not None and len(weights) != len(prms):
        raise ValueError(f"{len(weights)} guide weights for {len(prms)} guides")
    guides = [RewardGuide(load_reward_model(p), objective=objective) for p in prms]
    return guides[0] if len(guides) == 1 and weights is None else CombinedGuide(guides, weights)


# ----------------------------------------------------------------------------- host helpers


def _step_text(tokenizer, toks: list[int], boundary: bool, domain: Domain) -> str:
    text = tokenizer.decode(toks, skip_special=True)
    if boundary and domain.boundary == "blank_line":
        m = _BLANK_LINE.search(text)
        if m:
            text = text[:m.start()] + "\n\n"
    return text


def _eos_ids(tokenizer, eos_ids):
    if eos_ids is not None:
        return tuple(sorted(int(e) for e in eos_ids))
    ids = {getattr(tokenizer, "eos_id", None), getattr(tokenizer, "im_end_id", None)}
    return tuple(sorted(int(i) for i in ids if i is not None))


def _choose(scores: np.ndarray, ok: np.ndarray, select: str, tau: float, key) -> int:
    s = np.where(ok, scores, -np.inf)
    if select == "argmax":
        return int(np.argmax(s))
    if select == "sample":
        z = np.where(ok, scores / tau, -np.inf)
        return int(jax.random.categorical(key, jnp.asarray(z, jnp.float32)))
    raise ValueError(f"unknown selection {select!r} (argmax, sample)")


# ----------------------------------------------------------------------------- main loop


def guided_generate(model: CausalLM, params, tokenizer, prompts: Sequence[Sequence[int]], *,
                    guide: Optional[Guide] = None, guide_prompts: Optional[Sequence] = None,
                    prms: Optional[Sequence[str]] = None,
                    prm_weights: Optional[Sequence[float]] = None,
                    num_candidates: int = 5, domain="math", max_new_tokens: Optional[int] = None,
                    max_step_tokens: Optional[int] = None, max_steps: Optional[int] = None,
                    temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0, rng=None,
                    head_weights=None, select: str = "argmax", select_temperature: float = 1.0,
                    prefix: str = "cache", eos_ids=None,
                    log: Optional[Callable[[str], None]] = None,
                    record_logits: bool = False, return_cache: bool = False,
                    batch_buckets: Sequence[int] = BATCH_BUCKETS,
                    length_buckets: Sequence[int] = LENGTH_BUCKETS) -> list[GuidedResult]:
    """Guided decoding of each prompt (token ids, chat template applied); see the module doc.

    guide: a `Guide` callable, or `prms` (reward-model paths) with `prm_weights`; with neither,
    every candidate scores 0 and candidate 0 is kept (stepwise sampling). guide_prompts: what
    the guide reads as each prompt (str or messages; default: the decoded prompt ids).
    head_weights mix the policy's action heads (once, `single_head`). prefix: "cache",
    "reencode" or "text". log(line) receives `step N: scores [...] -> i` per prompt and step
    (prefixed by `prompt P: ` when there are several prompts). record_logits: keep each
    step's next-token logits in the trace. return_cache: return (results, final policy cache)
    (prefix "cache"; row p holds prompt p + its kept tokens in its valid slots).
    """
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    if prefix not in PREFIX_MODES:
        raise ValueError(f"unknown prefix mode {prefix!r} ({', '.join(PREFIX_MODES)})")
    if guide is None and prms:
        guide = load_guide(prms, prm_weights)
    dom = get_domain(domain, max_new_tokens=max_new_tokens, max_step_tokens=max_step_tokens,
                     max_steps=max_steps)
    k = int(num_candidates)
    eos = _eos_ids(tokenizer, eos_ids)
    pad_id = int(getattr(tokenizer, "pad_id", 0) or 0)
    prompts = [list(map(int, p)) for p in prompts]
    n = len(prompts)
    if guide_prompts is None:
        guide_prompts = [tokenizer.decode(p, skip_special=True) for p in prompts]
    if len(guide_prompts) != n:
        raise ValueError(f"{len(guide_prompts)} guide prompts for {n} prompts")
    pb = bucket_size(n, batch_buckets)
    pkeys = prompt_keys(jax.random.PRNGKey(0) if rng is None else rng, n)
    pkeys = np.concatenate([pkeys, np.zeros((pb - n, 2), np.uint32)])
    row_pkeys = jnp.asarray(np.repeat(pkeys, k, axis=0))
    cand_idx = jnp.asarray(np.tile(np.arange(k, dtype=np.int32), pb))
    select_key = jax.random.fold_in(jnp.asarray(pkeys[0]), 7919)
    fires, ends_nl, starts_nl = (jnp.asarray(t) for t in boundary_tables(tokenizer, dom.boundary))
    n_steps = bucket_size(min(dom.max_step_tokens, dom.max_new_tokens),
                          [2 ** i for i in range(3, 16)])
    model1, params1 = single_head(model, params, head_weights)
    model_u, params_u = unrolled(model1, params1)  # the decode loop's layout (models/unrolled)
    sample_kw = dict(n_steps=n_steps, temperature=float(temperature), top_k=int(top_k),
                     top_p=float(top_p), stop_ids=eos, pad_id=pad_id,
                     min_tokens=int(dom.min_step_tokens))

    kept = [[] for _ in range(pb)]  # kept token ids per prompt
    steps = [[] for _ in range(pb)]
    traces = [[] for _ in range(pb)]
    finish = ["" if i < n else "dummy" for i in range(pb)]
    sampled = [0] * pb

    def prefix_batch():
        """(ids, mask) [pb, T] of prompt + kept tokens (reencode) or + re-tokenised text."""
        rows = []
        for i in range(pb):
            base = prompts[i] if i < n else [pad_id]
            if prefix == "text" and i < n:
                rows.append(base + tokenizer.encode("".join(steps[i])))
            else:
                rows.append(base + kept[i])
        return pad_prompts(rows, pad_id, length_buckets)

    cache = last = None
    index = 0
    if prefix == "cache":
        ids, mask = pad_prompts([prompts[i] if i < n else [pad_id] for i in range(pb)], pad_id,
                                length_buckets)
        mask[n:] = 0
        cache_len = ids.shape[1] + dom.max_new_tokens + n_steps
        last, cache = prefill(model1, params1, ids, mask, cache_len)
        index = ids.shape[1]
        content = np.array([len(p) for p in prompts] + [0] * (pb - n))  # valid slots per row

    for t in range(dom.max_steps):
        active = np.array([f == "" for f in finish])
        if not active.any():
            break
        if prefix != "cache":
            ids, mask = prefix_batch()
            mask[~active] = 0
            if prefix == "reencode_each":
                ids, mask = np.repeat(ids, k, axis=0), np.repeat(mask, k, axis=0)
            last, cache = prefill(model1, params1, ids, mask, ids.shape[1] + n_steps)
            index = ids.shape[1]
        ngen = np.array([len(x) for x in kept], np.int32)
        limit = np.minimum(dom.max_step_tokens, dom.max_new_tokens - ngen)
        done_rows = np.repeat(~active | (limit <= 0), k)
        offsets = jnp.asarray(np.repeat(ngen, k))
        row_limit = jnp.asarray(np.repeat(limit, k).astype(np.int32))

        def sample(attempt: np.ndarray, done: np.ndarray):
            if prefix == "reencode_each":  # already K rows a prompt (the loop donates them)
                rc, rl = jax.tree.map(jnp.copy, (cache, last))
            else:
                rc, rl = _repeat(cache, last, k)
            keys = _candidate_keys(row_pkeys, t, cand_idx, jnp.asarray(attempt, jnp.int32))
            return _sample_step(model_u, params_u, rc, rl, keys, offsets, jnp.asarray(done),
                                row_limit, fires, ends_nl, starts_nl, **sample_kw)

        attempt = np.zeros(pb * k, np.int32)
        toks, ccache, clast, ceos, cbnd, clen = sample(attempt, done_rows)
        toks, ceos, cbnd, clen = (np.array(x) for x in (toks, ceos, cbnd, clen))
        texts = ["" if done_rows[r] else _step_text(tokenizer, toks[r, :clen[r]].tolist(),
                                                     bool(cbnd[r]), dom) for r in range(pb * k)]
        tries = np.where(done_rows, 0, 1).reshape(pb, k).sum(axis=1)
        while True:  # resample blank candidates, at most 3K samples per prompt
            eos_only = ceos & (clen == 1)
            blank = np.array([not texts[r].strip() for r in range(pb * k)]) & ~eos_only
            blank &= ~done_rows
            need = np.zeros(pb * k, bool)
            for p in range(pb):
                rows = np.nonzero(blank[p * k:(p + 1) * k])[0]
                room = 3 * k - tries[p]
                for r in rows[:max(room, 0)]:
                    need[p * k + r] = True
                tries[p] += min(len(rows), max(room, 0))
            if not need.any():
                break
            attempt = attempt + need
            t2, c2, l2, e2, b2, n2 = sample(attempt, ~need)
            ccache, clast = _merge(ccache, clast, c2, l2, jnp.asarray(need))
            t2, e2, b2, n2 = (np.array(x) for x in (t2, e2, b2, n2))
            for r in np.nonzero(need)[0]:
                sampled[r // k] += int(clen[r])
                toks[r], ceos[r], cbnd[r], clen[r] = t2[r], e2[r], b2[r], n2[r]
                texts[r] = _step_text(tokenizer, toks[r, :clen[r]].tolist(), bool(cbnd[r]), dom)

        # score the candidates of the active prompts
        eos_only = ceos & (clen == 1)
        blank = np.array([not x.strip() for x in texts])
        ok = ~done_rows & ~eos_only & ~blank
        scores = np.zeros(pb * k, np.float32)
        score_rows = [r for r in range(pb * k) if ok[r]]
        if guide is not None and score_rows and k > 1:
            got = np.asarray(guide([guide_prompts[r // k] for r in score_rows],
                                   [steps[r // k] + [texts[r]] for r in score_rows]), np.float32)
            if got.shape != (len(score_rows),):
                raise ValueError(f"the guide returned shape {got.shape} for "
                                 f"{len(score_rows)} candidates")
            scores[score_rows] = got

        winners = np.zeros(pb, np.int32)
        for p in range(pb):
            rows = slice(p * k, (p + 1) * k)
            if not active[p]:
                winners[p] = p * k
                continue
            sampled[p] += int(clen[rows].sum())
            if limit[p] <= 0:
                finish[p] = "length"
                winners[p] = p * k
                continue
            if not ok[rows].any():
                j = int(np.argmax(eos_only[rows])) if eos_only[rows].any() else 0
                winners[p] = p * k + j
                finish[p] = "eos" if eos_only[rows].any() else "empty"
                if eos_only[rows].any():
                    kept[p].append(int(toks[p * k + j, 0]))
                traces[p].append(StepRecord(texts[rows], [float("nan")] * k, j,
                                            clen[rows].tolist()))
                continue
            j = _choose(scores[rows], ok[rows], select, select_temperature,
                        jax.random.fold_in(select_key, t * pb + p))
            r = p * k + j
            winners[p] = r
            kept[p] += toks[r, :clen[r]].tolist()
            steps[p].append(texts[r])
            if log is not None:
                head = f"prompt {p}: " if n > 1 else ""
                log(f"{head}step {t}: scores [{', '.join(f'{s:.4f}' for s in scores[rows])}] "
                    f"-> {j}")
            if ceos[r]:
                finish[p] = "eos"
            elif dom.stop_marker and dom.stop_marker in texts[r]:
                finish[p] = "answer"
            elif len(kept[p]) >= dom.max_new_tokens:
                finish[p] = "length"
            traces[p].append(StepRecord(texts[rows], scores[rows].tolist(), j,
                                        clen[rows].tolist()))

        if prefix == "cache":
            grown = np.array([clen[winners[p]] if active[p] else 0 for p in range(pb)])
            start = index
            content = content + grown
            new_index = int(content.max())
            shift = new_index - (start + grown)
            cache, last = _select(ccache, clast, jnp.asarray(winners), jnp.asarray(shift),
                                  new_index)
            index = new_index
        else:  # (reencode_each: the next prefill re-encodes every candidate row anyway)
            last = jnp.take(clast, jnp.asarray(winners), axis=0)
            del ccache
        if record_logits:
            lg = np.asarray(last)
            for p in range(n):
                if active[p] and traces[p] and finish[p] not in ("empty",):
                    traces[p][-1].logits = lg[p]

    results = []
    for p in range(n):
        text = "".join(steps[p])
        results.append(GuidedResult(kept[p], text, steps[p], finish[p] or "steps", traces[p],
                                    sampled[p]))
    return (results, cache) if return_cache else results


# ----------------------------------------------------------------------------- baselines


def sample_plain(model: CausalLM, params, tokenizer, prompts: Sequence[Sequence[int]], *,
                 max_new_tokens: int, temperature: float = 1.0, top_k: int = 50,
                 top_p: float = 1.0, rng=None, head_weights=None, eos_ids=None,
                 batch_buckets: Sequence[int] = BATCH_BUCKETS,
                 length_buckets: Sequence[int] = LENGTH_BUCKETS) -> list[GuidedResult]:
    """Plain sampling (temperature 0: greedy) to EOS or `max_new_tokens`, in one on-device
    loop, on each prompt's own PRNG stream (the stream candidate 0 of guided decoding uses)."""
    eos = _eos_ids(tokenizer, eos_ids)
    pad_id = int(getattr(tokenizer, "pad_id", 0) or 0)
    n = len(prompts)
    pb = bucket_size(n, batch_buckets)
    pkeys = prompt_keys(jax.random.PRNGKey(0) if rng is None else rng, n)
    pkeys = np.concatenate([pkeys, np.zeros((pb - n, 2), np.uint32)])
    ids, mask = pad_prompts([list(p) for p in prompts] + [[pad_id]] * (pb - n), pad_id,
                            length_buckets)
    mask[n:] = 0
    n_steps = bucket_size(max_new_tokens, [2 ** i for i in range(3, 16)])
    model1, params1 = single_head(model, params, head_weights)
    last, cache = prefill(model1, params1, ids, mask, ids.shape[1] + n_steps)
    v = tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else last.shape[-1]
    off = jnp.zeros((v,), bool)
    toks, _, _, eosf, _, lengths = _sample_step(
        *unrolled(model1, params1), cache, last, jnp.asarray(pkeys), jnp.zeros((pb,), jnp.int32),
        jnp.asarray(np.arange(pb) >= n), jnp.full((pb,), max_new_tokens, jnp.int32), off, off,
        off, n_steps=n_steps, temperature=float(temperature), top_k=int(top_k),
        top_p=float(top_p), stop_ids=eos, pad_id=pad_id, min_tokens=1)
    toks, eosf, lengths = np.asarray(toks), np.asarray(eosf), np.asarray(lengths)
    out = []
    for p in range(n):
        row = toks[p, :lengths[p]].tolist()
        text = tokenizer.decode(row, skip_special=True)
        out.append(GuidedResult(row, text, [text], "eos" if eosf[p] else "length", [],
                                len(row)))
    return out
