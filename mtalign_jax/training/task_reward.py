"""Reward-model tasks: "rm", "classifier", "prm", "value", "unified" (PAPER.md section 2).

| task       | data rows                                 | head at         | loss          |
|------------|-------------------------------------------|-----------------|---------------|
| rm         | prompt, chosen, rejected [, margin]       | last token      | Bradley-Terry |
| classifier | prompt, response, label (0/1) (or pairs)  | last token      | 2-class CE    |
| prm        | prompt, steps (or response), step_labels  | each step's end | per-step BCE  |
| value      | prompt, steps, step_values [, mc_success] | each step's end | per-step MSE  |
| unified    | pooled rows of every objective            | last token      | 2-class CE    |

Bradley-Terry: -log sigmoid(r_c - r_r - margin) + center_coef (r_c + r_r)^2. PRM labels may be
soft (in [0, 1]); -100 marks an unlabelled step. Value targets are the hindsight-relabelled
V_t written by `python -m mtalign_jax.rollouts`. The unified PRM pools every objective's data
into one binary classifier with no conditioning (the paper's), or, with
`data.condition=True`, appends an objective tag ` [objective: NAME]` to each prompt so that one
dimension can be scored; its eval reports accuracy and AUROC per objective to compare the two.

Model: the trunk of `config.model.name` plus a fresh head (`eval/scoring.py`: RewardNet);
the LM heads are dropped, params are `{"trunk", "score"}`. `model.freeze_trunk=True`: only the
head trains, and the trunk features at the read positions are computed ONCE (one batched
forward over the data) and cached in `workdir/features_{train,eval}.npz`, so training is a
head-only loop. `model.train_top_layers=N`: only the top N layers (and the head) train.

Data: `data.files` (JSONL or a JSON list; "objective:PATH,..." for unified), else
`data.source` (built-in offline sources: chitchat_engagement, socratic_mind, champ_fws,
prm800k; unified: `data.sources="objective:source,..."`), else `data.synthetic` rows of a
planted rule (SYNTHETIC, for tiny runs: texts holding the marker byte '#' are bad).
Eval metrics (`eval/...` in metrics.jsonl): rm pairwise accuracy; classifier/unified accuracy
and AUROC (per objective for unified); prm step AUROC, step accuracy and first-error-step
accuracy; value MSE and Spearman rank correlation with the Monte-Carlo success rate.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import flax.linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtalign_jax.eval import scoring
from mtalign_jax.training import tasks
from mtalign_jax.training.state import TrainState

KINDS = ("rm", "classifier", "prm", "value", "unified")
IGNORE = -100
MARKER = "#"


# ----------------------------------------------------------------------------------------------
# config


def reward_config(kind: str, variant: str) -> ml_collections.ConfigDict:
    """Defaults shared by the reward-model configs (configs/rm_*, prm_*, value_*, unified_*)."""
    from mtalign_jax.training.config_base import base_config

    if kind not in KINDS:
        raise ValueError(f"unknown reward task {kind!r}; known: {', '.join(KINDS)}")
    c = base_config(kind)
    c.model.freeze_trunk = True
    c.model.train_top_layers = 0
    c.optim.train_top_layers = c.model.get_ref("train_top_layers")
    c.reward = ml_collections.ConfigDict()
    c.reward.format = "chat"  # "chat" (the model's chat template) or "plain" ("User: ...")
    c.reward.step_token = ""  # e.g. "<extra_0>" (Qwen PRM); "" = read at each step's end
    c.reward.system = ""
    c.reward.margin = 0.0  # rm: constant margin (a row's own "margin" field is added)
    c.reward.center_coef = 0.0  # rm: reward-centring penalty weight
    c.data.sources = ""  # unified: "objective:source,..."
    c.data.condition = False  # unified: objective tag in the input (the conditioned variant)
    c.data.source_offset = 0  # skip this many training examples (a disjoint part, e.g. a judge)
    c.data.max_steps = 32
    c.data.batch_size = 16
    c.optim.name = "adamw"
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    if variant == "tiny":
        c.model.name = "tiny"
        c.total_steps = 40
        c.checkpoint_every = 20
        c.eval_every = 20
        c.data.synthetic = 256
        c.data.max_len = 80
        c.data.buckets = (80,)  # one shape: one compilation of the step
        c.data.eval_frac = 0.2
        c.reward.format = "plain"
        c.optim.lr = 3e-3
    elif variant == "mini":
        c.model.name = "smollm2-135m-instruct"
        c.data.synthetic = 0
        c.data.max_len = 384
        c.total_steps = 300
        c.checkpoint_every = 100
        c.eval_every = 100
        c.log_every = 10
        c.optim.lr = 1e-3
        c.data.eval_frac = 0.15
    elif variant == "paper":
        c.model.dtype = "bfloat16"
        c.model.remat = True
        c.model.freeze_trunk = False
        c.data.synthetic = 0
        c.optim.weight_decay = 0.01
        c.optim.schedule = "cosine"
        c.mesh.shape = (1, -1, 1)
        c.checkpoint_every = 500
        c.eval_every = 500
        c.log_every = 10
    else:
        raise ValueError(f"unknown variant {variant!r}: tiny, mini, paper")
    return c


# ----------------------------------------------------------------------------------------------
# rows: reading, validating, synthetic data


def _file_rows(path: str):
    """(line, object) of a JSONL file or a JSON list."""
    from mtalign_jax.data.sources import _io

    p = _io.check_file(path)
    with open(p, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    return list(_io.read_json_array(p) if head.startswith("[") else _io.read_jsonl(p))


def _prompt(row, path, line):
    from mtalign_jax.data.sources import _io

    key = "prompt" if "prompt" in row or "question" not in row else "question"
    return _io.get(row, key, (str, list), path, line)


def _steps_of(row, path, line) -> list[str]:
    from mtalign_jax.data.segment import segment_math
    from mtalign_jax.data.sources import _io

    if "steps" in row:
        steps = _io.get(row, "steps", list, path, line)
        for s in steps:
            if not isinstance(s, str):
                _io.fail(path, line, f"expected a list of strings, got {type(s).__name__}",
                         "steps")
        return steps
    return segment_math(_io.get(row, "response", str, path, line))


def _numbers(row, field, n, path, line, optional=False) -> Optional[list[float]]:
    from mtalign_jax.data.sources import _io

    xs = _io.get(row, field, list, path, line, optional=optional)
    if xs is None:
        return None
    if len(xs) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               for x in xs):
        _io.fail(path, line, f"expected {n} numbers (one per step), got {xs!r:.80}", field)
    return [float(x) for x in xs]


def parse_row(kind: str, row: dict, path: str, line: int) -> list[dict]:
    """One file row -> normalised examples of `kind` (validated; errors name FILE:LINE:field).

    Pairs are accepted by the pointwise kinds (chosen -> 1, rejected -> 0) and step-labelled
    rows by unified (every labelled step prefix becomes one example, as the paper's data
    processor does).
    """
    from mtalign_jax.data.sources import _io

    if not isinstance(row, dict):
        _io.fail(path, line, f"expected an object, got {type(row).__name__}")
    prompt = _prompt(row, path, line)
    objective = row.get("objective") if isinstance(row.get("objective"), str) else ""
    if kind == "rm":
        margin = _io.get(row, "margin", (int, float), path, line, optional=True) or 0.0
        return [{"prompt": prompt, "chosen": _io.get(row, "chosen", str, path, line),
                 "rejected": _io.get(row, "rejected", str, path, line),
                 "margin": float(margin), "objective": objective}]
    if kind in ("classifier", "unified"):
        if "chosen" in row or "rejected" in row:
            return [{"prompt": prompt, "response": _io.get(row, s, str, path, line),
                     "label": int(s == "chosen"), "objective": objective}
                    for s in ("chosen", "rejected")]
        if "step_labels" in row and kind == "unified":
            steps = _steps_of(row, path, line)
            labels = _numbers(row, "step_labels", len(steps), path, line)
            return [{"prompt": prompt, "response": "".join(steps[:t + 1]),
                     "label": int(lab >= 0.5), "objective": objective}
                    for t, lab in enumerate(labels) if lab != IGNORE]
        label = _io.get(row, "label", (int, float, bool), path, line)
        if float(label) not in (0.0, 1.0):
            _io.fail(path, line, f"expected 0 or 1, got {label!r}", "label")
        return [{"prompt": prompt, "response": _io.get(row, "response", str, path, line),
                 "label": int(label), "objective": objective}]
    steps = _steps_of(row, path, line)
    if not steps:
        _io.fail(path, line, "no steps", "steps")
    if kind == "prm":
        labels = _numbers(row, "step_labels", len(steps), path, line)
        for lab in labels:
            if lab != IGNORE and not 0.0 <= lab <= 1.0:
                _io.fail(path, line, f"labels must be in [0, 1] or -100, got {lab}",
                         "step_labels")
        return [{"prompt": prompt, "steps": steps, "labels": labels, "objective": objective}]
    values = _numbers(row, "step_values", len(steps), path, line)
    mc = _numbers(row, "mc_success", len(steps), path, line, optional=True)
    return [{"prompt": prompt, "steps": steps, "labels": values, "mc": mc,
             "objective": objective}]


def _source_rows(kind: str, name: str) -> list[dict]:
    from mtalign_jax.data.sources import load_source

    rows = []
    for i, r in enumerate(load_source(name, split="all")):
        rows.extend(parse_row(kind, r, f"<source {name}>", i + 1))
    return rows


def _sentence(rng, marker: bool) -> str:
    words = ["ant", "bee", "cat", "dog", "elk", "fox", "gnu", "hen", "owl"]
    w = [str(rng.choice(words)) for _ in range(int(rng.integers(2, 5)))]
    if marker:
        w.insert(int(rng.integers(0, len(w) + 1)), MARKER)
    return " ".join(w) + "."


def synthetic_rows(kind: str, n: int, seed: int) -> list[dict]:
    """SYNTHETIC data of a planted rule (every row says so in `synthetic`): a text holding the
    marker '#' is bad. Pairs: the rejected response holds it. Steps: a step prefix is good
    until the first marked step. Value: hindsight targets of simulated rollouts (success rate
    0.9 from a clean prefix, 0.1 after a mark, M=8, gamma 0.9, r_t = the step label).
    Unified: objective "accuracy" follows the rule, "engagement" the opposite (a shared marker
    with conflicting meaning, so only a conditioned model can score one dimension)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = f"Question {i}: {_sentence(rng, False)}"
        if kind == "rm":
            rows.append({"prompt": prompt, "chosen": _sentence(rng, False),
                         "rejected": _sentence(rng, True), "margin": 0.0, "objective": ""})
        elif kind == "classifier":
            bad = bool(rng.random() < 0.5)
            rows.append({"prompt": prompt, "response": _sentence(rng, bad),
                         "label": int(not bad), "objective": ""})
        elif kind == "unified":  # short texts: the rule x objective interaction is learnable
            bad = bool(rng.random() < 0.5)
            obj = ("accuracy", "engagement")[i % 2]
            words = [str(rng.choice(["ant", "bee", "cat", "dog"])) for _ in range(2)]
            if bad:
                words.insert(int(rng.integers(0, 3)), MARKER)
            rows.append({"prompt": f"Q{i}.", "response": " ".join(words),
                         "label": int(not bad) if obj == "accuracy" else int(bad),
                         "objective": obj})
        else:
            k = int(rng.integers(2, 6))
            first_bad = int(rng.integers(0, k + 1)) if rng.random() < 0.7 else k
            steps = [_sentence(rng, t == first_bad) + "\n\n" for t in range(k)]
            good = np.array([1.0 if t < first_bad else 0.0 for t in range(k)])
            row = {"prompt": prompt, "steps": steps, "labels": good.tolist(), "objective": ""}
            if kind == "value":
                from mtalign_jax.losses import hindsight_value_targets

                z = (rng.random((k, 8)) < np.where(good > 0, 0.9, 0.1)[:, None]).astype(
                    np.float32)
                row["labels"] = np.asarray(hindsight_value_targets(
                    jnp.asarray(good, jnp.float32), jnp.asarray(z), 0.9)).tolist()
                row["mc"] = z.mean(axis=1).tolist()
            rows.append(row)
    for r in rows:
        r["synthetic"] = True
    return rows


def load_reward_data(config) -> dict:
    """{"train": examples, "eval": examples}: every named file validated first."""
    from mtalign_jax.data.sources.splits import split_by_prompt

    kind, c = config.task, config.data
    rows: list[dict] = []
    if c.files:
        for spec in str(c.files).split(","):
            spec = spec.strip()
            if not spec:
                continue
            objective, path = "", spec
            if ":" in spec and not os.path.exists(spec):
                objective, path = spec.split(":", 1)
            for line, row in _file_rows(path):
                for ex in parse_row(kind, row, path, line):
                    ex["objective"] = objective or ex["objective"]
                    rows.append(ex)
    elif c.get("sources", ""):
        for spec in str(c.sources).split(","):
            objective, name = spec.strip().split(":", 1)
            for ex in _source_rows(kind, name):
                ex["objective"] = objective
                rows.append(ex)
    elif c.source:
        rows = _source_rows(kind, c.source)
    elif c.synthetic:
        rows = synthetic_rows(kind, int(c.synthetic), config.seed)
    else:
        raise ValueError(f"no data for task {kind!r}: set --config.data.files=PATH (or "
                         f"data.source / data.sources)")
    if not rows:
        raise ValueError(f"task {kind!r}: the data holds no usable example")
    if kind == "unified" and c.condition:
        for r in rows:
            if not r["objective"]:
                raise ValueError("unified with data.condition=True needs an objective per row "
                                 "(data.sources=objective:source,... or objective:PATH)")
    key = lambda r: json.dumps(r["prompt"]) if not isinstance(r["prompt"], str) \
        else r["prompt"]  # noqa: E731
    parts = split_by_prompt(rows, {"train": 1.0 - c.eval_frac, "eval": c.eval_frac},
                            salt=f"reward/{c.split_seed}", key=key)
    specs = str(c.files or c.get("sources", "")).split(",")
    if sum(bool(x.strip()) for x in specs) > 1:  # pooled sources come one after another: mix
        rng = np.random.default_rng(c.split_seed)  # them, so a cap keeps every objective
        parts = {k: [v[i] for i in rng.permutation(len(v))] for k, v in parts.items()}
    start = int(c.get("source_offset", 0))
    train = parts["train"][start:start + int(c.source_cap)]
    if not train:
        raise ValueError(f"task {kind!r}: data.source_offset={start} leaves no training example "
                         f"(the split has {len(parts['train'])})")
    return {"train": train, "eval": parts["eval"][:c.eval_cap]}


# ----------------------------------------------------------------------------------------------
# encoding


def encode_examples(kind: str, rows: list[dict], tok, rc, max_len: int, max_steps: int,
                    condition: bool = False) -> dict:
    """Token rows and targets of normalised examples.

    Returns {"enc": [(ids, ends)] (pairs: chosen rows then rejected rows), "targets" [N, S],
    "tmask" [N, S] bool, "margin" [N], "mc" [N, S] (value), "objective" [N] str}.
    S = max_steps for step kinds, 1 otherwise (the read position is the last token).
    """
    enc_kw = dict(fmt=rc.format, max_len=max_len, step_token=rc.step_token, system=rc.system)
    n = len(rows)
    s = max_steps if kind in ("prm", "value") else 1
    targets = np.zeros((n, s), np.float32)
    tmask = np.zeros((n, s), bool)
    mc = np.full((n, s), np.nan, np.float32)
    enc = []
    for i, r in enumerate(rows):
        prompt = scoring.objective_tag(r["prompt"], r["objective"]) if condition else r["prompt"]
        if kind == "rm":
            enc.append(scoring.encode_steps(tok, prompt, [r["chosen"]], **enc_kw))
            tmask[i, 0] = True
        elif kind in ("classifier", "unified"):
            enc.append(scoring.encode_steps(tok, prompt, [r["response"]], **enc_kw))
            targets[i, 0], tmask[i, 0] = r["label"], True
        else:
            steps = r["steps"][:s]
            ids, ends = scoring.encode_steps(tok, prompt, steps, **enc_kw)
            enc.append((ids, ends))
            lab = np.asarray(r["labels"][:s], np.float32)
            targets[i, :len(lab)] = np.where(lab == IGNORE, 0.0, lab)
            tmask[i, :len(lab)] = (lab != IGNORE) & (np.asarray(ends) >= 0)
            if r.get("mc") is not None:
                mc[i, :len(lab)] = r["mc"][:s]
    if kind == "rm":
        enc += [scoring.encode_steps(tok, r["prompt"], [r["rejected"]], **enc_kw) for r in rows]
    margin = np.asarray([rc.margin + r.get("margin", 0.0) for r in rows], np.float32) \
        if kind == "rm" else np.zeros((n,), np.float32)
    return {"enc": enc, "targets": targets, "tmask": tmask, "margin": margin, "mc": mc,
            "objective": np.asarray([r["objective"] for r in rows], object)}


def _positions(kind: str, ends: list[int], s: int) -> np.ndarray:
    pos = np.full((s,), -1, np.int32)
    if kind in ("prm", "value"):
        pos[:min(len(ends), s)] = ends[:s]
    return pos


def compute_features(net, params, kind: str, enc: list, s: int, pad_id: int,
                     batch_size: int = 16, desc: str = "features") -> np.ndarray:
    """Trunk features at the read positions of every encoded row: [N, S, D] float32.

    Step kinds read each step's end; the others the last token (S = 1). Rows are batched by
    length (sorted) and run through one jitted forward per bucket.
    """
    from tqdm.auto import tqdm

    n = len(enc)
    out = np.zeros((n, s, net.cfg.d_model), np.float32)
    order = np.argsort([len(i) for i, _ in enc], kind="stable")
    for a in tqdm(range(0, n, batch_size), desc=desc, leave=False):
        idx = order[a:a + batch_size]
        chunk = [enc[j] for j in idx]
        ids, mask, _ = scoring.collate(chunk, pad_id, rows=batch_size)
        pos = np.full((batch_size, s), -1, np.int32)
        for r, (_, e) in enumerate(chunk):
            pos[r] = _positions(kind, e, s)
        f = np.asarray(scoring.features(net, params, ids, mask, pos))
        out[idx] = f[:len(chunk), -1:] if kind not in ("prm", "value") else f[:len(chunk), :s]
    return out


# ----------------------------------------------------------------------------------------------
# losses and metrics on head outputs


def head_loss(kind: str, raw: jax.Array, batch: dict, center_coef: float = 0.0):
    """Loss and metrics from raw head outputs.

    raw: rm [B, 2] (chosen, rejected rewards); classifier/unified [B, 1, 2]; prm/value [B, S].
    """
    from mtalign_jax import losses

    if kind == "rm":
        l, acc = losses.bradley_terry_loss(raw[:, 0], raw[:, 1], margin=batch["margin"],
                                           center_coef=center_coef)
        loss = jnp.mean(l)
        return loss, {"loss": loss, "accuracy": jnp.mean(acc),
                      "margin": jnp.mean(raw[:, 0] - raw[:, 1])}
    if kind in ("classifier", "unified"):
        l, acc = losses.classifier_loss(raw[:, 0], batch["targets"][:, 0].astype(jnp.int32))
        loss = jnp.mean(l)
        return loss, {"loss": loss, "accuracy": jnp.mean(acc)}
    if kind == "prm":
        loss, probs = losses.step_bce_loss(raw, batch["targets"], batch["tmask"])
        hit = ((probs > 0.5) == (batch["targets"] > 0.5)) & batch["tmask"]
        acc = jnp.sum(hit) / jnp.maximum(jnp.sum(batch["tmask"]), 1)
        return loss, {"loss": loss, "step_accuracy": acc}
    loss = losses.value_mse_loss(raw, batch["targets"], batch["tmask"])
    return loss, {"loss": loss}


def auroc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if a class
    is missing."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def first_error_step(good: np.ndarray, mask: np.ndarray) -> int:
    """Index of the first masked step judged bad (good <= 0.5), or -1."""
    bad = np.nonzero(mask & (good <= 0.5))[0]
    return int(bad[0]) if bad.size else -1


def eval_metrics(kind: str, scores: np.ndarray, data: dict) -> dict:
    """Metrics of one full pass over the eval set. scores: rm [N, 2] (rewards chosen,
    rejected); classifier/unified [N] P(class 1); prm [N, S] P(good); value [N, S]."""
    t, m = data["targets"], data["tmask"]
    if kind == "rm":
        return {"pairwise_accuracy": float(np.mean(scores[:, 0] > scores[:, 1])),
                "margin": float(np.mean(scores[:, 0] - scores[:, 1]))}
    if kind in ("classifier", "unified"):
        y = t[:, 0]
        out = {"accuracy": float(np.mean((scores > 0.5) == (y > 0.5))),
               "auroc": auroc(scores, y)}
        objs = sorted(set(data["objective"].tolist()) - {""})
        if kind == "unified":
            for o in objs:
                sel = data["objective"] == o
                out[f"accuracy/{o}"] = float(np.mean((scores[sel] > 0.5) == (y[sel] > 0.5)))
                out[f"auroc/{o}"] = auroc(scores[sel], y[sel])
        return out
    if kind == "prm":
        hard = m & ((t == 0.0) | (t == 1.0))
        out = {"step_auroc": auroc(scores[hard], t[hard]),
               "step_accuracy": float(np.mean((scores[m] > 0.5) == (t[m] > 0.5)))}
        fes = [first_error_step(scores[i], m[i]) == first_error_step(t[i], m[i])
               for i in range(len(t)) if m[i].any()]
        out["first_error_accuracy"] = float(np.mean(fes)) if fes else float("nan")
        return out
    mc = data["mc"]
    out = {"mse": float(np.mean((scores[m] - t[m]) ** 2))}
    has = m & np.isfinite(mc)
    out["spearman_mc"] = spearman(scores[has], mc[has]) if has.any() else float("nan")
    out["spearman_target"] = spearman(scores[m], t[m])
    return out


# ----------------------------------------------------------------------------------------------
# the task


def _fingerprint(config, rows: list[dict]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([config.task, config.model.name, config.data.max_len,
                         config.data.max_steps, config.reward.to_dict(),
                         bool(config.data.condition)], sort_keys=True, default=str).encode())
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class RewardTask:
    """Task glue for the five reward-model kinds (`config.task`)."""

    def __init__(self, config):
        if config.task not in KINDS:
            raise ValueError(f"RewardTask: task {config.task!r} is not one of {KINDS}")
        self.config = config
        self.kind = config.task

    def load_data(self, workdir: str) -> dict:
        return load_reward_data(self.config)

    # -- model ---------------------------------------------------------------------------

    def load_net(self):
        """(RewardNet, params {"trunk", "score"}, tokenizer): the base trunk + a fresh head."""
        from mtalign_jax.hf.load import load_pretrained

        m = self.config.model
        key = jax.random.PRNGKey(self.config.seed)
        if str(m.name).lower() == "tiny":  # a random trunk: one jitted init of the whole net
            from mtalign_jax.hf.load import tokenizer_for
            from mtalign_jax.models.presets import get_preset

            cfg = get_preset("tiny", dtype=m.dtype, param_dtype=m.dtype, remat=bool(m.remat))
            net = scoring.make_net(cfg, self.kind)
            ids = jnp.zeros((1, 8), jnp.int32)
            params = jax.jit(lambda k: flax.linen.unbox(net.init(k, ids)["params"]))(key)
            return net, params, tokenizer_for("tiny")
        model, params, tok = load_pretrained(m.name, num_heads=1, dtype=m.dtype)
        cfg = model.cfg.replace(remat=bool(m.remat))
        net = scoring.make_net(cfg, self.kind)
        head = scoring.init_head(net, key)
        return net, {"trunk": params["trunk"], "score": head}, tok

    def _cached_features(self, net, params, split, data, workdir, tok):
        path = os.path.join(workdir, f"features_{split}.npz")
        fp = _fingerprint(self.config, data["rows"])
        if os.path.exists(path):
            z = np.load(path)
            if str(z["fingerprint"]) == fp:
                return z["feats"]
            print(f"[{self.kind}] {path} was computed for other data or model: recomputing")
        s = data["targets"].shape[1]
        f = compute_features(net, params, self.kind, data["enc"], s, tok.pad_id,
                             batch_size=self.config.data.batch_size, desc=f"features {split}")
        if self.kind == "rm":  # [2N, 1, D] chosen rows then rejected rows -> [N, 2, D]
            n = f.shape[0] // 2
            f = np.concatenate([f[:n], f[n:]], axis=1)
        if jax.process_index() == 0:
            tmp = path + ".tmp.npz"
            np.savez(tmp, feats=f, fingerprint=np.array(fp))
            os.replace(tmp, path)
        return f

    # -- build ---------------------------------------------------------------------------

    def build(self, data: dict, mesh, workdir: str) -> tasks.Built:
        import grain
        from jax.sharding import NamedSharding, PartitionSpec as P
        from mtalign_jax.training.optim import make_optimizer
        from mtalign_jax.training.steps import apply_gradients

        cfg, kind = self.config, self.kind
        frozen = bool(cfg.model.freeze_trunk)
        net, params, tok = self.load_net()
        enc = {}
        for split in ("train", "eval"):
            enc[split] = encode_examples(kind, data[split], tok, cfg.reward, cfg.data.max_len,
                                         cfg.data.max_steps, bool(cfg.data.condition))
            enc[split]["rows"] = data[split]
        if not data["train"]:
            raise ValueError(f"task {kind!r}: no training examples after the eval split")
        feats = {}
        if frozen:
            for split in ("train", "eval"):
                if data[split]:
                    feats[split] = self._cached_features(net, params, split, enc[split],
                                                         workdir, tok)
            trunk = params["trunk"]
            repl = NamedSharding(mesh, P())
            train_params = jax.device_put({"score": params["score"]}, repl)
            tx = make_optimizer(cfg.optim, train_params)
            state = TrainState(step=jnp.zeros((), jnp.int32), params=train_params,
                               opt_state=jax.jit(tx.init)(train_params),
                               rng=jax.random.PRNGKey(cfg.seed),
                               skipped=jnp.zeros((), jnp.int32))
        else:
            trunk = None
            state, tx, _ = tasks.make_state(cfg, net, params, mesh)

        center = float(cfg.reward.center_coef)

        def read(p, batch):
            """Raw head outputs at the read positions (see `head_loss`)."""
            if frozen:
                f = batch["feats"]
            else:
                h = net.apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                              method=scoring.RewardNet.hidden)
                pos = jnp.where(batch["positions"] < 0,
                                scoring.last_positions(batch["attention_mask"])[:, None],
                                batch["positions"])
                f = scoring.gather_positions(h, pos)
                if kind == "rm":
                    n = f.shape[0] // 2
                    f = jnp.concatenate([f[:n], f[n:]], axis=1)
            return net.apply({"params": {"score": p["score"]}}, f,
                             method=scoring.RewardNet.apply_head)

        def step(st: TrainState, batch, rng):
            del rng
            (loss, metrics), grads = jax.value_and_grad(
                lambda p: head_loss(kind, read(p, batch), batch, center), has_aux=True)(st.params)
            return apply_gradients(st, tx, loss, grads, metrics)

        def evaluate(p, batch):
            return {"raw": read(p, batch)}

        bs = int(cfg.data.batch_size)

        def host_batch(split: str, idx: np.ndarray) -> dict:
            e = enc[split]
            b = {"targets": e["targets"][idx], "tmask": e["tmask"][idx],
                 "margin": e["margin"][idx]}
            if frozen:
                b["feats"] = feats[split][idx]
                b["_tokens"] = 0
            else:
                n = len(e["targets"])
                rows = list(idx) + ([i + n for i in idx] if kind == "rm" else [])
                chunk = [e["enc"][i] for i in rows]
                ids, mask, _ = scoring.collate(chunk, tok.pad_id, cfg.data.buckets)
                s = e["targets"].shape[1]
                b["input_ids"], b["attention_mask"] = ids, mask
                b["positions"] = np.stack([_positions(kind, c[1], s) for c in chunk])
                b["_tokens"] = int(mask.sum())
            return b

        n_train = len(data["train"])
        ds = grain.MapDataset.range(n_train).shuffle(seed=cfg.seed).repeat(None).batch(bs)
        train_iter = iter(ds.to_iter_dataset())
        nproc, pid = jax.process_count(), jax.process_index()

        def next_batch(it):
            idx = np.asarray(next(it))
            per = len(idx) // nproc
            return host_batch("train", idx[pid * per:(pid + 1) * per])

        place = tasks.make_placer(mesh)
        n_eval = len(data["eval"])

        def run_eval(eval_fn, p) -> dict:
            if not n_eval:
                return {}
            raws = []
            for a in range(0, n_eval, bs):
                idx = np.arange(a, a + bs) % n_eval  # a fixed batch shape (wraps around)
                r = np.asarray(jax.device_get(eval_fn(p, place(host_batch("eval", idx)))["raw"]))
                raws.append(r[:min(bs, n_eval - a)])
            raw = np.concatenate(raws)
            return eval_metrics(kind, _scores_from_raw(kind, raw), enc["eval"])

        def finish(st: TrainState, wd: str) -> None:
            full = jax.device_get(st.params)
            if frozen:
                full = {"trunk": jax.device_get(trunk), "score": full["score"]}
            rm = scoring.RewardModel(net, full, tok, kind=kind,
                                     transform=scoring.KINDS[kind][2], format=cfg.reward.format,
                                     max_len=int(cfg.data.max_len),
                                     step_token=cfg.reward.step_token, system=cfg.reward.system,
                                     conditioned=bool(cfg.data.condition))
            if jax.process_index() == 0:
                scoring.save_reward_model(os.path.join(wd, "model"), rm, cfg.model.name)

        self.net, self.tok = net, tok
        return tasks.Built(state=state, step=step, evaluate=evaluate, train_iter=train_iter,
                           next_batch=next_batch, place=place, run_eval=run_eval, finish=finish)


def _scores_from_raw(kind: str, raw: np.ndarray) -> np.ndarray:
    """Eval scores from raw head outputs (rm [N, 2]; classifier [N]; prm/value [N, S])."""
    how = scoring.KINDS[kind][2]
    sc = np.asarray(scoring.transform(jnp.asarray(raw), how))
    if kind in ("classifier", "unified"):
        return sc[:, 0]
    return sc
