"""Reward models on the frozen base trunk: encode once, then small heads trained in seconds.

Features of a (prompt, response) text are the frozen LOWER trunk's activations (the layers the
demo never trains, `models/split.py`) read two ways and concatenated, [2D]:
the last response token's activation and the mean over the response tokens. The sampler
(`demo/sampler.py`) produces the same features for every generated response during sampling,
so scoring a generation never re-encodes it.

Heads (optax, full batch, standardised features, L2):
- `fit_bradley_terry(f_chosen, f_rejected)`: a linear Bradley-Terry reward (engagement RMs:
  labeller, guide, judge), -log sigmoid(r_c - r_r);
- `fit_logistic(f, y)`: a linear classifier P(correct) (the accuracy outcome RM).
A `LinearRM` scores features; `z` standardises its scores by their mean/std on its own
training features, so two guides can be combined by weights.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtalign_jax.data import pipeline
from mtalign_jax.decoding.sampling import bucket_size


@dataclasses.dataclass
class LinearRM:
    """score(f) = ((f - mu) / sd) @ w + b; `scale`/`shift`: its scores' std/mean on training."""

    mu: np.ndarray
    sd: np.ndarray
    w: np.ndarray
    b: float
    shift: float = 0.0
    scale: float = 1.0

    def score(self, f: np.ndarray) -> np.ndarray:
        """f [N, F] -> [N] raw scores."""
        return ((np.asarray(f, np.float64) - self.mu) / self.sd) @ self.w + self.b

    def z(self, f: np.ndarray) -> np.ndarray:
        """Scores standardised by the training-set scores' mean and std."""
        return (self.score(f) - self.shift) / self.scale

    def to_dict(self) -> dict:
        return {k: np.asarray(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> "LinearRM":
        return cls(mu=np.asarray(d["mu"]), sd=np.asarray(d["sd"]), w=np.asarray(d["w"]),
                   b=float(d["b"]), shift=float(d["shift"]), scale=float(d["scale"]))


@dataclasses.dataclass(frozen=True)
class LinearScore:
    """score(f) = f @ w + b on raw features f [N, F]: a fixed mix of standardised RMs, folded
    into one vector (what the guided decoder evaluates inside its compiled loop)."""

    w: np.ndarray  # [F] float64
    b: float

    def __call__(self, f: np.ndarray) -> np.ndarray:
        """f [N, F] -> [N] float64."""
        return np.asarray(f, np.float64) @ self.w + self.b

    @classmethod
    def mix(cls, parts) -> "LinearScore":
        """sum_i c_i * rm_i.z(f) for parts [(c_i, LinearRM rm_i)], as one (w, b)."""
        w, b = 0.0, 0.0
        for c, rm in parts:
            per = np.asarray(rm.w, np.float64) / np.asarray(rm.sd, np.float64)  # [F]
            w = w + c * per / rm.scale
            b = b + c * (rm.b - rm.shift - float(np.asarray(rm.mu, np.float64) @ per)) / rm.scale
        return cls(w=np.asarray(w, np.float64), b=float(b))


def _standardise(f):
    f = np.asarray(f, np.float64)
    return f.mean(0), f.std(0) + 1e-6


@functools.partial(jax.jit, static_argnames=("steps", "kind"))
def _fit(x1, x2, y, l2, lr, *, steps, kind):
    params = {"w": jnp.zeros((x1.shape[1],), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    tx = optax.adam(lr)

    def loss_fn(p):
        if kind == "bt":
            margin = (x1 - x2) @ p["w"]
            data = -jnp.mean(jax.nn.log_sigmoid(margin))
        else:
            logit = x1 @ p["w"] + p["b"]
            data = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, y))
        return data + l2 * jnp.sum(p["w"] ** 2)

    def body(_, c):
        p, s = c
        g = jax.grad(loss_fn)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
    return p


def fit_bradley_terry(f_chosen, f_rejected, *, l2=1e-2, lr=1e-2, steps=300) -> LinearRM:
    """A linear Bradley-Terry reward on features [N, F] of chosen and rejected responses."""
    mu, sd = _standardise(np.concatenate([f_chosen, f_rejected]))
    xc = jnp.asarray((f_chosen - mu) / sd, jnp.float32)
    xr = jnp.asarray((f_rejected - mu) / sd, jnp.float32)
    p = _fit(xc, xr, jnp.zeros((xc.shape[0],)), l2, lr, steps=steps, kind="bt")
    rm = LinearRM(mu=mu, sd=sd, w=np.asarray(p["w"], np.float64), b=0.0)
    s = rm.score(np.concatenate([f_chosen, f_rejected]))
    rm.shift, rm.scale = float(s.mean()), float(s.std() + 1e-9)
    return rm


def fit_logistic(f, y, *, l2=1e-2, lr=1e-2, steps=300) -> LinearRM:
    """A linear classifier P(y = 1) (logit score) on features [N, F] with labels y [N] in {0,1}."""
    mu, sd = _standardise(f)
    x = jnp.asarray((f - mu) / sd, jnp.float32)
    p = _fit(x, x, jnp.asarray(y, jnp.float32), l2, lr, steps=steps, kind="logistic")
    rm = LinearRM(mu=mu, sd=sd, w=np.asarray(p["w"], np.float64), b=float(p["b"]))
    s = rm.score(f)
    rm.shift, rm.scale = float(s.mean()), float(s.std() + 1e-9)
    return rm


def pair_accuracy(rm: LinearRM, f_chosen, f_rejected) -> tuple[float, float]:
    """(fraction of pairs with r_c > r_r, its standard error)."""
    win = (rm.score(f_chosen) > rm.score(f_rejected)).astype(np.float64)
    return float(win.mean()), float(win.std() / np.sqrt(max(len(win), 1)))


# ----------------------------------------------------------------------------------------------
# encoding through the lower trunk


@functools.partial(jax.jit, static_argnames=("lower",))
def _lower_forward(lower, lo_p, ids, mask):
    x, _ = lower.apply({"params": lo_p}, ids, attention_mask=mask)
    return x


ENCODE_BUCKET = 32  # batches are padded to a multiple of this many tokens (few compiles)


def encode_lower(lower, lo_p, seqs, *, length: int, pad_id: int, batch_size: int = 16,
                 keep_activations: bool = False, progress=None):
    """Run the lower trunk once over (ids, labels) rows of at most `length` tokens.

    Rows are encoded in order of length, each batch right-padded only to its longest row
    (rounded up to `ENCODE_BUCKET`): right padding leaves the real positions' activations
    unchanged, and the padding is the cost that matters here (chat rows are ~half of `length`).
    Returns (features [N, 2D] as `LinearRM` reads them, activations [N, length, D] float32 with
    zeros past each row's end, or None), in the input order. The response tokens are those with
    a label (!= -100); the last is the last real one.
    """
    n = len(seqs)
    order = np.argsort([len(s[0]) for s in seqs], kind="stable")
    feats = np.zeros((n, 2 * lower.cfg.d_model), np.float32)
    acts = np.zeros((n, length, lower.cfg.d_model), np.float32) if keep_activations else None
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        chunk = [seqs[j] for j in idx]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - real)
        t = min(length, bucket_size(max(len(s[0]) for s in chunk), (ENCODE_BUCKET,)))
        b = pipeline.pad_rows(chunk, t, pad_id)
        x = np.asarray(_lower_forward(lower, lo_p, b["input_ids"], b["attention_mask"]),
                       np.float32)[:real]
        real_mask = b["attention_mask"][:real, :, None]
        resp = (b["labels"][:real] != -100)
        last = b["attention_mask"][:real].sum(1) - 1
        f_last = x[np.arange(real), last]
        f_mean = (x * resp[..., None]).sum(1) / np.maximum(resp.sum(1), 1)[:, None]
        feats[idx] = np.concatenate([f_last, f_mean], axis=1)
        if keep_activations:
            acts[idx, :t] = x * real_mask
        if progress:
            progress(real)
    return feats, acts
