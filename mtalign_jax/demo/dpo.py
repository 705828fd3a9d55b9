"""MAH-DPO and the DPO baselines on cached lower-trunk activations (the demo's training stage).

The lower trunk is frozen, so its activations for every pair sequence are computed once
(`rewards.encode_lower(..., keep_activations=True)`) and shared by MAH-DPO and every baseline.
A step runs only the top layers (`models/split.py` upper part, via `preference_loss_fn`'s
`hidden_fn`) and the heads; trainable params are `{"upper": ..., "heads": {"kernel": [K,D,V]}}`.

Pair data (`PairSet`): rows `[2P]` = P chosen then P rejected (encoded with
`Tokenizer.encode_pair`), activations x [2P, T, D], attention_mask, resp_idx / resp_labels
[2P, R], objective ids [P], and the reference log-probs [P, 2] of the base model (same lower
activations, base top layers, base head), computed once.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax

from mtalign_jax.decoding.sampling import bucket_size
from mtalign_jax.models.model import CausalLM
from mtalign_jax.training import steps as steps_lib
from mtalign_jax.training.tasks import response_view


@dataclasses.dataclass
class PairSet:
    x: np.ndarray  # [2P, T, D] lower activations, chosen rows then rejected rows
    attention_mask: np.ndarray  # [2P, T]
    resp_idx: np.ndarray  # [2P, R]
    resp_labels: np.ndarray  # [2P, R]
    objective: np.ndarray  # [P] int32
    ref: np.ndarray  # [P, 2] float32 reference (chosen, rejected) log-probs

    @property
    def n(self) -> int:
        return self.objective.shape[0]

    def rows(self, pairs: np.ndarray) -> dict:
        """The batch of pair indices `pairs` [p] (chosen rows then rejected rows)."""
        r = np.concatenate([pairs, pairs + self.n])
        return {"x": self.x[r], "attention_mask": self.attention_mask[r],
                "resp_idx": self.resp_idx[r], "resp_labels": self.resp_labels[r],
                "objective_ids": np.concatenate([self.objective[pairs]] * 2).astype(np.int32),
                "ref_chosen": self.ref[pairs, 0], "ref_rejected": self.ref[pairs, 1]}


RESP_BUCKET = 16


def response_positions(labels: np.ndarray):
    """(resp_idx, resp_labels) [N, R] of right-padded labels [N, T]; R = the longest response
    rounded up to `RESP_BUCKET` (the head runs on R positions a row: keep R tight)."""
    return response_view(labels, bucket=RESP_BUCKET)


def hidden_fn(upper):
    """params, batch -> top-layer hidden [B, T, D] from the cached lower activations."""
    def fn(params, batch):
        h, _ = upper.apply({"params": params["upper"]}, batch["x"],
                           attention_mask=batch["attention_mask"])
        return h
    return fn


@functools.partial(jax.jit, static_argnames=("model", "upper"))
def _logps(model, upper, params, batch):
    return steps_lib.response_logps(model, params, batch, hidden_fn=hidden_fn(upper))


LENGTH_BUCKET = 32


def sequence_logps(upper, params_upper, head_kernel, data: dict, batch_size: int = 16):
    """Summed response log-probs [N] of rows under (top layers, one head [D, V]).

    Rows go in order of response length (then length), and each batch is cut to its own
    longest row (rounded up to `LENGTH_BUCKET` tokens) and its own longest response (rounded
    up to `RESP_BUCKET` head positions): a set's arrays are padded to its longest row, and the
    head over R positions a row is most of the cost (human engagement replies: ~18 tokens
    a row in a set padded to R = 96). Right padding only: the cut changes no real position.
    """
    cfg = upper.cfg
    model = CausalLM(cfg, 1)
    params = {"upper": params_upper, "heads": {"kernel": head_kernel[None]}}
    n, t_all = data["attention_mask"].shape
    r_all = data["resp_idx"].shape[1]
    n_resp = (data["resp_labels"] != -100).sum(axis=1)
    length = data["attention_mask"].sum(axis=1)
    order = np.lexsort((length, n_resp))
    out = np.zeros((n,), np.float32)
    for i in range(0, n, batch_size):
        sl = order[i:i + batch_size]
        pad = np.concatenate([sl, np.full(batch_size - len(sl), sl[0])])
        t = min(t_all, bucket_size(int(length[sl].max()), (LENGTH_BUCKET,)))
        r = min(r_all, bucket_size(int(n_resp[sl].max()), (RESP_BUCKET,)))
        b = {"x": data["x"][pad, :t], "attention_mask": data["attention_mask"][pad, :t],
             "resp_idx": data["resp_idx"][pad, :r], "resp_labels": data["resp_labels"][pad, :r]}
        out[sl] = np.asarray(_logps(model, upper, params, b), np.float32)[:len(sl)]
    return out


def make_trainer(upper, num_heads: int, objectives, *, beta: float, lr: float, routed: bool,
                 group_size):
    """(tx, jitted step(params, opt_state, batch) -> (params, opt_state, metrics))."""
    model = CausalLM(upper.cfg, num_heads)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    loss_kw = dict(objectives=tuple(objectives), beta=beta, routed=routed,
                   group_size=group_size, hidden_fn=hidden_fn(upper))

    @jax.jit
    def step(params, opt_state, batch):
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: steps_lib.preference_loss_fn(model, p, batch, **loss_kw),
            has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return tx, step


def batches(sets: dict, plan: list, pairs_per_step: int, steps: int, seed: int):
    """Pair indices per step. `plan`: the objectives each step draws from; a balanced MAH-DPO
    plan draws pairs_per_step / K from each objective; a single-objective or mixed plan draws
    from one pool. Each pool is reshuffled every epoch (seeded)."""
    rng = np.random.default_rng(seed)
    pools = {}
    for name, idx in sets.items():
        pools[name] = {"idx": np.asarray(idx), "order": [], "pos": 0}

    def draw(name, k):
        p = pools[name]
        out = []
        while len(out) < k:
            if p["pos"] >= len(p["order"]):
                p["order"], p["pos"] = rng.permutation(p["idx"]), 0
            out.append(p["order"][p["pos"]])
            p["pos"] += 1
        return out

    for _ in range(steps):
        per = pairs_per_step // len(plan)
        yield np.asarray(sum((draw(name, per) for name in plan), []), np.int64)


def implicit_reward_accuracy(policy_lp: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Held-out preference accuracy of the implicit reward beta (log pi - log ref): the
    fraction of pairs with (pc - rc) > (pr - rr); ties count one half. Returns (acc, s.e.)."""
    p = policy_lp.shape[0] // 2
    margin = (policy_lp[:p] - ref[:, 0]) - (policy_lp[p:] - ref[:, 1])
    win = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return float(win.mean()), float(win.std() / np.sqrt(max(p, 1)))
