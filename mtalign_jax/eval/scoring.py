"""Scoring API of reward models and PRMs, used by training, decoding and evaluation.

    rm = load_reward_model("workdirs/prm_math")          # a workdir of ours, or an HF
                                                         # seq-cls / Qwen2.5-Math-PRM directory
    steps, final = score(rm, {"input_ids": ids, "attention_mask": m}, step_mask)
    s = score_texts(rm, prompts, responses)              # np.ndarray [N] of final scores
    per_step = score_steps(rm, prompts, steps_lists)     # list of [n_i] arrays
    mix = combine([s_acc, s_eng], [0.7, 0.3])            # user-weighted combination

A reward network (`RewardNet`) is the decoder trunk plus one small head; its parameter tree is
`{"trunk": ..., "score": ...}` (no LM head). What a head's output means depends on the kind:

| kind        | head         | outputs | score                                   |
|-------------|--------------|---------|-----------------------------------------|
| rm          | linear D->1  | r       | r (Bradley-Terry reward)                |
| classifier  | linear D->2  | z0, z1  | softmax P(class 1)                      |
| unified     | linear D->2  | z0, z1  | softmax P(class 1)                      |
| prm         | linear D->1  | logit   | sigmoid(logit) = P(step is good)        |
| prm (Qwen)  | MLP D->D->2  | z0, z1  | softmax P(class 1) at each `<extra_0>`  |
| value       | MLP D->D->1  | v       | v (hindsight value, unbounded)          |

Input text (one rule for training and scoring, `encode_steps`): the prompt through the chat
template (`format="chat"`, with its generation prompt) or as `"User: {prompt}\\n\\nAssistant: "`
(`format="plain"`, the paper's Llama classifiers), then the response's steps, each encoded on
its own and followed by the explicit step token when the model has one (Qwen's `<extra_0>`).
The head is read at the last token of every step (per-step scores) and at the last token
(the final score). No end-of-turn token is appended, so a partial response is scored exactly
like the prefix of a complete one. Inputs longer than `max_len` keep their END (where the
candidate is): the first tokens are dropped.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.models.heads import MLPHead, ScalarHead
from mtalign_jax.models.presets import ModelConfig
from mtalign_jax.models.trunk import Trunk

# kind -> (head, outputs, transform)
KINDS = {
    "rm": ("linear", 1, "identity"),
    "classifier": ("linear", 2, "softmax1"),
    "unified": ("linear", 2, "softmax1"),
    "prm": ("linear", 1, "sigmoid"),
    "value": ("mlp", 1, "identity"),
}
LENGTH_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class RewardNet(nn.Module):
    """Trunk + scoring head. `head` "linear" (ScalarHead) or "mlp" (MLPHead); `out` 1 or 2."""

    cfg: ModelConfig
    head: str = "linear"
    out: int = 1

    def setup(self):
        self.trunk = Trunk(self.cfg)
        if self.head == "linear":
            self.score = ScalarHead(out=self.out, bias=False)
        elif self.head == "mlp":
            self.score = MLPHead(out=self.out)
        else:
            raise ValueError(f"unknown head {self.head!r} (linear, mlp)")

    def hidden(self, input_ids, attention_mask=None):
        """input_ids [B, T] (right-padded) -> final-norm hidden [B, T, D]."""
        h, _ = self.trunk(input_ids, None, attention_mask, None)
        return h

    def apply_head(self, h):
        """h [..., D] -> raw outputs [...] (out 1) or [..., 2] (out 2), float32."""
        return self.score(h)

    def __call__(self, input_ids, attention_mask=None):
        return self.apply_head(self.hidden(input_ids, attention_mask))


def transform(raw: jax.Array, how: str) -> jax.Array:
    """Raw head outputs -> scores: identity, sigmoid, or softmax P(class 1) of [..., 2]."""
    if how == "identity":
        return raw
    if how == "sigmoid":
        return jax.nn.sigmoid(raw)
    if how == "softmax1":
        return jax.nn.softmax(raw, axis=-1)[..., 1]
    raise ValueError(f"unknown score transform {how!r}")


@dataclasses.dataclass
class RewardModel:
    """A loaded reward model: network, params {"trunk", "score"}, tokenizer and input rule."""

    net: RewardNet
    params: dict
    tokenizer: object
    kind: str
    transform: str
    format: str = "chat"  # "chat" | "plain"
    max_len: int = 1024
    step_token: str = ""  # e.g. "<extra_0>"; "" = steps read at their last token
    system: str = ""  # optional system message of the chat format (Qwen PRM)
    conditioned: bool = False  # unified PRM with an objective tag: score_* need `objective`
    source: str = ""  # where it was loaded from (recorded by judges)

    def meta(self) -> dict:
        return {"kind": self.kind, "head": self.net.head, "out": self.net.out,
                "transform": self.transform, "format": self.format, "max_len": self.max_len,
                "step_token": self.step_token, "system": self.system,
                "conditioned": self.conditioned}


def make_net(cfg: ModelConfig, kind: str) -> RewardNet:
    if kind not in KINDS:
        raise ValueError(f"unknown reward model kind {kind!r}; known: {', '.join(KINDS)}")
    head, out, _ = KINDS[kind]
    return RewardNet(cfg, head=head, out=out)


def init_head(net: RewardNet, rng: jax.Array) -> dict:
    """Fresh head parameters (the `score` subtree) for `net`."""
    h = jnp.zeros((1, net.cfg.d_model), jnp.float32)
    return nn.unbox(net.init(rng, h, method=RewardNet.apply_head)["params"])["score"]


# ----------------------------------------------------------------------------------------------
# text -> tokens


def _render_plain(prompt) -> str:
    if isinstance(prompt, str):
        return f"User: {prompt}\n\nAssistant: "
    turns = [f"{'User' if m['role'] == 'user' else m['role'].capitalize()}: {m['content']}"
             for m in prompt]
    return "\n\n".join(turns) + "\n\nAssistant: "


def prompt_ids(tok, prompt, fmt: str = "chat", system: str = "") -> list[int]:
    """The prompt's tokens under the model's input format (see the module docstring)."""
    if fmt == "plain":
        return tok.encode(_render_plain(prompt))
    if fmt != "chat":
        raise ValueError(f"unknown input format {fmt!r} (chat, plain)")
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system:
        msgs = [{"role": "system", "content": system}] + msgs
    return tok.encode_chat(msgs, add_generation_prompt=True)


def encode_steps(tok, prompt, steps: Sequence[str], *, fmt: str = "chat", max_len: int = 1024,
                 step_token: str = "", system: str = "") -> tuple[list[int], list[int]]:
    """(ids, step_ends): tokens of prompt + steps, and the index of each step's last token.

    With `step_token`, each step is followed by that token and read there. Inputs longer than
    `max_len` keep their last `max_len` tokens; a step whose end was cut gets end -1.
    """
    ids = list(prompt_ids(tok, prompt, fmt, system))
    sep = tok.encode(step_token) if step_token else []
    ends = []
    for s in steps:
        ids += tok.encode(s) + sep
        ends.append(len(ids) - 1)
    if len(ids) > max_len:
        drop = len(ids) - max_len
        ids = ids[drop:]
        ends = [e - drop if e - drop >= 0 else -1 for e in ends]
    return ids, ends


def bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return int(b)
    return int(-(-n // buckets[-1]) * buckets[-1])


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int,
            length_buckets=LENGTH_BUCKETS, rows: Optional[int] = None):
    """Right-pad encoded rows. Returns (ids [B, T], mask [B, T], ends [B, S] (-1 = none)).

    T and S are bucketed; `rows` pads the batch with empty rows (mask 0) to a fixed size.
    """
    b = rows or len(encoded)
    t = bucket(max(len(i) for i, _ in encoded), length_buckets)
    s = bucket(max(1, max(len(e) for _, e in encoded)), (1, 2, 4, 8, 16, 32, 64, 128, 256))
    ids = np.full((b, t), pad_id, np.int32)
    mask = np.zeros((b, t), np.int32)
    ends = np.full((b, s), -1, np.int32)
    for r, (i, e) in enumerate(encoded):
        ids[r, :len(i)], mask[r, :len(i)] = i, 1
        ends[r, :len(e)] = e
    return ids, mask, ends


# ----------------------------------------------------------------------------------------------
# jitted pieces


def gather_positions(h: jax.Array, positions: jax.Array) -> jax.Array:
    """h [B, T, D], positions [B, S] (-1 = none, read as 0) -> [B, S, D]."""
    return jnp.take_along_axis(h, jnp.maximum(positions, 0)[..., None], axis=1)


def last_positions(attention_mask: jax.Array) -> jax.Array:
    """Index of each row's last real token [B] (right padding; 0 for an empty row)."""
    t = attention_mask.shape[1]
    idx = jnp.arange(t)[None, :]
    return jnp.max(jnp.where(attention_mask > 0, idx, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("net",))
def features(net: RewardNet, params, ids, mask, positions):
    """Trunk features at positions: ids/mask [B, T], positions [B, S] -> [B, S, D] float32.

    The last real token's feature is appended: output [B, S + 1, D].
    """
    h = net.apply({"params": params}, ids, mask, method=RewardNet.hidden)
    pos = jnp.concatenate([positions, last_positions(mask)[:, None]], axis=1)
    return gather_positions(h, pos).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("net", "how"))
def _score_positions(net: RewardNet, params, ids, mask, positions, how):
    raw = net.apply({"params": params}, features(net, params, ids, mask, positions),
                    method=RewardNet.apply_head)
    sc = transform(raw, how)
    valid = jnp.concatenate([positions >= 0, jnp.ones_like(positions[:, :1], bool)], axis=1)
    sc = jnp.where(valid, sc, jnp.nan)
    return sc[:, :-1], sc[:, -1]


def score(rm: RewardModel, token_batch: dict, step_mask=None):
    """Per-step and final scores of a right-padded token batch, in one jitted forward.

    token_batch: {"input_ids" [B, T], "attention_mask" [B, T]}; step_mask [B, T] bool marks
    the last token of every step (None: no steps). Returns (step scores [B, S] float32 with
    NaN where row b has fewer than S steps, S = the most steps in a row; final scores [B] read
    at each row's last real token).
    """
    ids = np.asarray(token_batch["input_ids"], np.int32)
    mask = np.asarray(token_batch.get("attention_mask", np.ones_like(ids)), np.int32)
    if step_mask is None:
        step_mask = np.zeros(ids.shape, bool)
    step_mask = np.asarray(step_mask, bool) & (mask > 0)
    counts = step_mask.sum(axis=1)
    s = int(counts.max()) if counts.size else 0
    pos = np.full((ids.shape[0], max(s, 1)), -1, np.int32)
    for b in range(ids.shape[0]):
        nz = np.nonzero(step_mask[b])[0]
        pos[b, :len(nz)] = nz
    steps, final = _score_positions(rm.net, rm.params, ids, mask, pos, rm.transform)
    return np.asarray(steps)[:, :s], np.asarray(final)


def score_encoded(rm: RewardModel, encoded: Sequence[tuple[list[int], list[int]]],
                  batch_size: int = 16):
    """Scores of already-encoded rows [(ids, step_ends)]: (list of [n_i] step scores, [N])."""
    steps_out, finals = [], []
    for i in range(0, len(encoded), batch_size):
        chunk = list(encoded[i:i + batch_size])
        ids, mask, ends = collate(chunk, rm.tokenizer.pad_id,
                                  rows=bucket(len(chunk), BATCH_BUCKETS))
        st, fi = _score_positions(rm.net, rm.params, ids, mask, ends, rm.transform)
        st, fi = np.asarray(st), np.asarray(fi)
        for r, (_, e) in enumerate(chunk):
            steps_out.append(st[r, :len(e)])
        finals.append(fi[:len(chunk)])
    return steps_out, (np.concatenate(finals) if finals else np.zeros((0,), np.float32))


def objective_tag(prompt, objective: str):
    """The conditioned unified PRM's input: ` [objective: NAME]` after the (last) prompt text,
    right before the response, so that truncation (which keeps the end) never drops it."""
    tag = f" [objective: {objective}]"
    if isinstance(prompt, str):
        return prompt + tag
    last = len(prompt) - 1
    return [dict(m, content=m["content"] + tag) if i == last else m
            for i, m in enumerate(prompt)]


def _encode(rm: RewardModel, prompt, steps, objective: Optional[str] = None):
    if rm.conditioned:
        if not objective:
            raise ValueError(f"{rm.source or 'this reward model'} is conditioned on the "
                             f"objective: pass objective=NAME")
        prompt = objective_tag(prompt, objective)
    return encode_steps(rm.tokenizer, prompt, steps, fmt=rm.format, max_len=rm.max_len,
                        step_token=rm.step_token, system=rm.system)


def score_steps(rm: RewardModel, prompts: Sequence, steps_lists: Sequence[Sequence[str]],
                batch_size: int = 16, objective: Optional[str] = None) -> list[np.ndarray]:
    """Per-step scores of each response given as its list of steps: list of [n_i] arrays."""
    enc = [_encode(rm, p, s, objective) for p, s in zip(prompts, steps_lists)]
    return score_encoded(rm, enc, batch_size)[0]


def score_texts(rm: RewardModel, prompts: Sequence, responses: Sequence[str],
                batch_size: int = 16, objective: Optional[str] = None) -> np.ndarray:
    """Final scores [N] of (prompt, response text) pairs, re-tokenised for this model.

    The response is one step (a PRM with a step token reads the token after it); inputs longer
    than the model's max_len keep their end.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"score_texts: {len(prompts)} prompts but {len(responses)} responses")
    enc = [_encode(rm, p, [r], objective) for p, r in zip(prompts, responses)]
    return score_encoded(rm, enc, batch_size)[1]


def combine(scores_list: Sequence, weights: Sequence[float]) -> np.ndarray:
    """sum_i w_i s_i with the weights normalised to sum 1 (non-negative, positive sum).

    Each entry of `scores_list` is an array of the same shape (one per RM/PRM).
    """
    if len(scores_list) != len(weights) or not scores_list:
        raise ValueError(f"combine: {len(scores_list)} score arrays but {len(weights)} weights")
    w = np.asarray(weights, np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"combine: weights {w.tolist()} must be >= 0 with a positive sum")
    arrs = [np.asarray(s, np.float64) for s in scores_list]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"combine: score shapes differ: {[a.shape for a in arrs]}")
    return (sum(wi * a for wi, a in zip(w / w.sum(), arrs))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# saving and loading


def save_reward_model(model_dir: str, rm: RewardModel, base_model: str) -> None:
    """`model_dir` (e.g. workdir/model): params + meta.json (model config, reward meta)."""
    from mtalign_jax.checkpoint import save_params

    save_params(model_dir, jax.device_get(rm.params),
                {"model_config": rm.net.cfg.to_dict(), "base_model": base_model,
                 "reward": rm.meta()})


def _model_dir(path: str) -> Optional[str]:
    for cand in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(cand, "meta.json")):
            return cand
    return None


def load_reward_model(path: str, dtype: str = "float32") -> RewardModel:
    """A reward model from one of our workdirs (W or W/model) or an HF directory
    (`*ForSequenceClassification`: linear head at the last token; `Qwen2ForProcessRewardModel`:
    MLP head, P(class 1) at each `<extra_0>`, the Qwen PRM system prompt)."""
    path = str(path)
    mdir = _model_dir(path) if os.path.isdir(path) else None
    if mdir is not None:
        from mtalign_jax.checkpoint import load_params
        from mtalign_jax.hf.load import tokenizer_for

        params, meta = load_params(mdir)
        if "reward" not in meta:
            raise ValueError(f"{mdir}/meta.json: field 'reward': not a reward model (a policy "
                             f"workdir? load it with load_pretrained)")
        r = meta["reward"]
        cfg = ModelConfig.from_dict(meta["model_config"]).replace(dtype=dtype, param_dtype=dtype)
        net = RewardNet(cfg, head=r["head"], out=int(r["out"]))
        params = {"trunk": jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype),
                                                  params["trunk"]),
                  "score": jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32),
                                                  params["score"])}
        return RewardModel(net, params, tokenizer_for(meta["base_model"]), kind=r["kind"],
                           transform=r["transform"], format=r["format"],
                           max_len=int(r["max_len"]), step_token=r["step_token"],
                           system=r.get("system", ""), conditioned=bool(r.get("conditioned")),
                           source=os.path.abspath(mdir))
    if os.path.isfile(os.path.join(path, "config.json")):
        from mtalign_jax.hf import safetensors as st

        model, params, head, head_params, tok, layout = st.load_reward_model(path, dtype=dtype)
        if tok is None:
            raise ValueError(f"{path}: no tokenizer.json: a reward model needs its tokenizer")
        if layout == "prm":
            net = RewardNet(model.cfg, head="mlp", out=head.out)
            kind, how, step_token = "prm", "softmax1" if head.out == 2 else "sigmoid", "<extra_0>"
            system = "Please reason step by step, and put your final answer within \\boxed{}."
        else:
            net = RewardNet(model.cfg, head="linear", out=head.out)
            kind = "classifier" if head.out == 2 else "rm"
            how, step_token, system = ("softmax1" if head.out == 2 else "identity"), "", ""
        return RewardModel(net, {"trunk": params["trunk"], "score": head_params}, tok,
                           kind=kind, transform=how, format="chat",
                           max_len=int(model.cfg.max_seq_len), step_token=step_token,
                           system=system, source=os.path.abspath(path))
    raise FileNotFoundError(f"{path}: not a reward-model workdir (no model/meta.json) or an HF "
                            f"directory (no config.json)")
