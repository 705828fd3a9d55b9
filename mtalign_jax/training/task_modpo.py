"""MODPO baseline (Zhou et al. 2023), task "modpo": one head trained for a target objective k.

    loss = -log sigmoid((beta / w_k) d - (1 / w_k) sum_{j != k} w_j (r_j(chosen) - r_j(rejected)))

with d the policy-minus-reference log-ratio margin of DPO (losses.modpo_loss). The training
pairs are the target objective's (`config.data.objectives` names exactly that one objective);
the weights come from `config.modpo.weights` ("accuracy:0.5,engagement:0.5": the target's w_k
and every other objective's w_j).

Where the other objectives' reward margins r_j(chosen) - r_j(rejected) come from:
  (a) primary: `config.modpo.margin_models = "engagement:W1,..."`: the implicit rewards
      r_j = margin_beta * (log pi_j - log pi_ref) of single-objective DPO models (our workdirs,
      one head each; pi_ref is this run's reference model, the one they were trained against).
      Their log-probs of every pair are computed once into `workdir/modpo_margin_logps.npz`
      (fingerprinted, like the reference log-probs; never beside the input data).
  (b) any objective not named there: the pair rows' metadata, `margins: {objective: m}` or
      `scores: {objective: [chosen, rejected]}` (training/pair_scores.py); SYNTHETIC rows get
      rule scores. A row without them is a `FILE:LINE: field 'scores'` error.
With every w_j = 0 and w_k = 1 this is exactly DPO (tests/test_baselines.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.losses import modpo_loss
from mtalign_jax.training import pair_scores, task_preference, tasks
from mtalign_jax.training.steps import apply_gradients, response_logps

MARGIN_FILE = "modpo_margin_logps.npz"


def modpo_loss_fn(model, params, batch, *, target: str, beta: float, weight: float,
                  other_weights: Sequence[float], hidden_fn=None):
    """(loss, metrics) of a one-head MODPO batch.

    batch: the preference batch (P chosen rows then P rejected rows) with `ref_chosen`,
    `ref_rejected` [P] and `margins` [P, J] (the other objectives' reward margins).
    Metrics as the DPO task's: `loss/<target>`, `rewards/<target>/{chosen,rejected,margin,
    accuracy}`, plus `modpo/other_margin` (mean of sum_j w_j margin_j).
    """
    lp = response_logps(model, params, batch, hidden_fn=hidden_fn)
    p = lp.shape[0] // 2
    ow = jnp.asarray(other_weights, jnp.float32).reshape(-1)
    losses, cr, rr = modpo_loss(lp[:p], lp[p:], batch["ref_chosen"], batch["ref_rejected"],
                                batch["margins"].astype(jnp.float32), beta=beta, weight=weight,
                                other_weights=ow)
    loss = jnp.mean(losses)
    acc = jnp.mean((cr > rr).astype(jnp.float32))
    metrics = {"loss": loss, f"loss/{target}": loss, f"count/{target}": jnp.asarray(p),
               f"rewards/{target}/chosen": jnp.mean(cr),
               f"rewards/{target}/rejected": jnp.mean(rr),
               f"rewards/{target}/margin": jnp.mean(cr - rr),
               f"rewards/{target}/accuracy": acc, "rewards/accuracy": acc,
               "modpo/other_margin": jnp.mean(batch["margins"] @ ow)}
    return loss, metrics


def make_modpo_step(model, tx, **loss_kw):
    def step(state, batch, rng):
        del rng
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: modpo_loss_fn(model, p, batch, **loss_kw), has_aux=True)(state.params)
        return apply_gradients(state, tx, loss, grads, metrics)

    def evaluate(params, batch):
        return modpo_loss_fn(model, params, batch, **loss_kw)[1]

    return step, evaluate


def parse_margin_models(spec: str) -> dict[str, str]:
    """"engagement:W1,honesty:W2" -> {"engagement": "W1", ...} ("" -> {})."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in str(spec or "").split(","))):
        name, sep, path = item.partition(":")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"modpo.margin_models={spec!r}: expected 'objective:WORKDIR,...',"
                             f" got {item!r}")
        out[name.strip()] = path.strip()
    return out


def _margin_model_logps(config, data, workdir, tok, name: str, path: str):
    """{split: [N, 2]} log-probs (chosen, rejected) of the target's pairs under margin model
    `path`, cached in workdir/MARGIN_FILE with a fingerprint of data, reference and model."""
    from mtalign_jax.hf.load import load_pretrained

    cache = os.path.join(workdir, MARGIN_FILE)
    h = hashlib.sha256()
    meta = os.path.join(path, "model", "meta.json")
    stamp = os.path.getmtime(meta) if os.path.exists(meta) else 0.0
    for s in ("train", "eval"):
        h.update(task_preference._fingerprint(config, data, s).encode())  # noqa: SLF001
    h.update(json.dumps([os.path.abspath(path), stamp]).encode())
    fp = h.hexdigest()[:16]
    z = dict(np.load(cache)) if os.path.exists(cache) else {}
    if str(z.get(f"fingerprint/{name}", "")) == fp:
        return {s: z[f"{s}/{name}"] for s in ("train", "eval")}
    model, params, _ = load_pretrained(path)
    if model.num_heads != 1:
        raise ValueError(f"modpo.margin_models: {path} has {model.num_heads} heads; MODPO margins "
                         f"come from single-objective DPO models (one head)")
    obj = data["objectives"][0]
    out = {s: task_preference.compute_reference_logps(
        model, params, tok, data[s][obj], max_len=config.data.max_len,
        max_prompt_len=config.data.max_prompt_len, desc=f"margin model {name} {s}")
        for s in ("train", "eval")}
    if jax.process_index() == 0:
        z.update({f"{s}/{name}": out[s] for s in out})
        z[f"fingerprint/{name}"] = np.array(fp)
        tmp = cache + ".tmp.npz"
        np.savez(tmp, **z)
        os.replace(tmp, cache)
    return out


class ModpoTask(task_preference.PreferenceTask):
    """One head, the target objective's pairs, margins from models or metadata."""

    def load_data(self, workdir: str) -> dict:
        cfg = self.config
        data = task_preference.load_preference_data(cfg)
        if len(data["objectives"]) != 1:
            raise ValueError(f"modpo: config.data.objectives must name the one target objective "
                             f"(its pairs train the head), got {','.join(data['objectives'])}")
        target = data["objectives"][0]
        weights = pair_scores.parse_weights(cfg.modpo.weights, "modpo.weights")
        if weights.get(target, 0.0) <= 0:
            raise ValueError(f"modpo.weights={cfg.modpo.weights!r} must give the target "
                             f"objective {target!r} a weight > 0")
        others = [o for o in weights if o != target]
        models = parse_margin_models(cfg.modpo.margin_models)
        unknown = [o for o in models if o not in others]
        if unknown:
            raise ValueError(f"modpo.margin_models names {', '.join(unknown)}, not among the "
                             f"other objectives of modpo.weights ({', '.join(others)})")
        from mtalign_jax.hf.load import _workdir_model  # noqa: SLF001

        for o, path in models.items():
            if not os.path.isdir(path) or _workdir_model(path) is None:
                raise FileNotFoundError(f"modpo.margin_models: {o}:{path} is not a finished "
                                        f"workdir (no {path}/model/meta.json)")
        from_meta = [o for o in others if o not in models]
        for s in ("train", "eval"):
            rows = pair_scores.with_synthetic_scores(data[s][target], from_meta)
            for o in from_meta:
                bad = [r for r in rows if pair_scores.row_margin(r, o) is None]
                if bad:
                    raise pair_scores.missing_metadata_error(
                        cfg.data.files, target,
                        lambda r, o=o: pair_scores.row_margin(r, o) is not None,
                        f"no reward margin for objective {o!r}: give the row 'margins': "
                        f"{{{o!r}: r(chosen) - r(rejected)}} or 'scores': {{{o!r}: "
                        f"[chosen, rejected]}}, or set --config.modpo.margin_models="
                        f"{o}:DPO_WORKDIR", "scores")
            data[s][target] = rows
        data["modpo"] = {"target": target, "weight": weights[target], "others": others,
                         "other_weights": [weights[o] for o in others], "models": models}
        return data

    def margin_table(self, data, workdir, tok, ref) -> dict[str, np.ndarray]:
        """{split: [N, J]} float32 reward margins of the other objectives, in `others` order."""
        cfg, info = self.config, data["modpo"]
        target = info["target"]
        table = {}
        cols: dict[str, dict[str, np.ndarray]] = {s: {} for s in ("train", "eval")}
        for o, path in info["models"].items():
            lps = _margin_model_logps(cfg, data, workdir, tok, o, path)
            for s in cols:
                d = (lps[s][:, 0] - lps[s][:, 1]) - (ref[s][target][:, 0] - ref[s][target][:, 1])
                cols[s][o] = float(cfg.modpo.margin_beta) * d
        for s in cols:
            rows = data[s][target]
            for o in info["others"]:
                if o not in cols[s]:
                    cols[s][o] = np.asarray([pair_scores.row_margin(r, o) for r in rows])
            table[s] = np.stack([cols[s][o] for o in info["others"]], axis=1).astype(
                np.float32) if info["others"] else np.zeros((len(rows), 0), np.float32)
        return table

    def make_step(self, model, tx, data: dict):
        """The MODPO loss (PreferenceTask hook)."""
        info = data["modpo"]
        return make_modpo_step(model, tx, target=info["target"], beta=self.config.loss.beta,
                               weight=info["weight"],
                               other_weights=tuple(info["other_weights"]))

    def pair_tables(self, data: dict, workdir: str, tok, ref) -> dict:
        """`margins` [P, J] per pair (PreferenceTask hook)."""
        margins = self.margin_table(data, workdir, tok, ref)
        target = data["modpo"]["target"]
        return {"margins": {s: {target: m} for s, m in margins.items()}}

    def build(self, data: dict, mesh, workdir: str) -> tasks.Built:
        cfg = self.config
        if cfg.model.num_heads != 1:
            raise ValueError(f"modpo trains one head; config.model.num_heads="
                             f"{cfg.model.num_heads}")
        if cfg.loss.reference != "precomputed" or cfg.loss.reference_free or cfg.loss.ipo:
            raise ValueError("modpo needs loss.reference='precomputed' (reference log-probs "
                             "computed once into the workdir), no reference_free, no ipo")
        return super().build(data, mesh, workdir)
