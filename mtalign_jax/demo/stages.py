"""The demo's stages. Each is a function `(ctx) -> result dict` whose result is cached in the
workdir by `__main__` (a rerun loads it instead of recomputing).

data -> rm_engagement -> samples -> pairs -> encode -> train -> eval_preference -> eval_generation

`Context` holds the config, the workdir, the stage results so far and (loaded on first use)
the base model cut into a frozen lower part and its top layers.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mtalign_jax.demo import dpo, rewards, sampler
from mtalign_jax.demo.config import DemoConfig

OBJECTIVES = ("accuracy", "engagement")
ROLES = ("labeller", "guide", "judge")


@dataclasses.dataclass
class Context:
    cfg: DemoConfig
    workdir: str
    results: dict

    @functools.cached_property
    def base(self) -> dict:
        """The base SmolLM2 cut into parts: lower/upper modules and params, base head [D, V]."""
        from mtalign_jax.hf.load import load_pretrained
        from mtalign_jax.models.split import split_model, split_params

        model, params, tok = load_pretrained("smollm2-135m-instruct", num_heads=1)
        cfg = model.cfg.replace(dtype=self.cfg.dtype)
        lower, upper = split_model(cfg, self.cfg.n_top)
        lo_p, up_p = split_params(params["trunk"], self.cfg.n_top)
        if cfg.dtype != "float32":  # frozen: stored once in the compute dtype
            lo_p = jax.tree_util.tree_map(lambda a: a.astype(cfg.dtype), lo_p)
        return {"tok": tok, "lower": lower, "upper": upper, "lo_p": lo_p, "up_p": up_p,
                "head": params["heads"]["kernel"][0], "cfg": cfg}

    @property
    def tok(self):
        return self.base["tok"]

    def bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True)


def _chat(tok, text: str) -> list[int]:
    return tok.encode_chat([{"role": "user", "content": text}])


# ------------------------------------------------------------------------------------- data


def stage_data(ctx: Context) -> dict:
    """Arithmetic prompts and chitchat prefixes, with disjoint splits and RM parts."""
    from mtalign_jax.data.sources import chitchat, read_source, split_by_prompt, split_parts
    from mtalign_jax.data.sources.arithmetic import generate
    from mtalign_jax.make_pairs import PROMPT_TEMPLATES

    c = ctx.cfg
    template = PROMPT_TEMPLATES["arithmetic"]
    pool = generate(n=8 * (c.train_prompts + c.acc_heldout_prompts + c.eval_prompts),
                    seed=c.seed, num_operands=c.arith_operands, max_value=c.arith_max_value)
    seen, uniq = set(), []
    for p in pool:
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            uniq.append({"prompt": template.format(prompt=p["prompt"]), "answer": p["answer"]})
    parts = split_by_prompt(uniq, {"train": 0.5, "heldout": 0.25, "eval": 0.25},
                            salt=f"demo/{c.seed}")
    arith = {"train": parts["train"][:c.train_prompts],
             "heldout": parts["heldout"][:c.acc_heldout_prompts],
             "eval": parts["eval"][:c.eval_prompts]}
    for k, n in (("train", c.train_prompts), ("heldout", c.acc_heldout_prompts),
                 ("eval", c.eval_prompts)):
        if len(arith[k]) < n:
            raise ValueError(f"arithmetic {k}: only {len(arith[k])} distinct prompts for {n}")

    # Engagement RMs: human pairs by opening prompt, cut into 4 disjoint parts by topic.
    pairs = read_source("chitchat_engagement")
    rm_parts = split_parts(pairs, {"labeller": 0.25, "guide": 0.25, "judge": 0.25,
                                   "test": 0.25}, seed=c.seed, key=lambda r: r["topic"])
    rm = {r: rm_parts[r][:c.rm_pairs] for r in ROLES}
    rm["test"] = rm_parts["test"][:c.eng_heldout_pairs]
    # Policy prompts: prefixes of conversations that no RM pair uses.
    used = {p[k] for p in pairs for k in ("chosen_id", "rejected_id")}
    convs = [cv for cv in read_source("chitchat") if cv["id"] not in used and len(cv["turns"]) > 2]
    prefixes = []
    for cv in convs:
        t = 1 + int(cv["id"].encode().hex(), 16) % 2  # 1 or 2 leading turns
        turns = [s[:c.turn_chars] for s in cv["turns"][:t]]
        prefixes.append({"prompt": chitchat.render(cv["prompt"], turns), "id": cv["id"]})
    eparts = split_by_prompt(prefixes, {"train": 0.5, "eval": 0.5}, salt=f"demo/eng/{c.seed}")
    eng = {"train": eparts["train"][:c.train_prompts], "eval": eparts["eval"][:c.eval_prompts]}
    return {"arith": arith, "eng": eng, "rm": rm,
            "sizes": {**{f"accuracy/{k}": len(v) for k, v in arith.items()},
                      **{f"engagement/{k}": len(v) for k, v in eng.items()},
                      **{f"rm/{k}": len(v) for k, v in rm.items()}}}


# ----------------------------------------------------------------------------- reward models


def _encode_pairs(ctx: Context, rows: list[dict], desc: str, keep: bool):
    """Lower-trunk features (and activations) of pair rows: chosen rows then rejected rows.
    A sequence shared by several pairs (one sample against several others) is encoded once."""
    from mtalign_jax.training.task_preference import encode_pairs

    c, b = ctx.cfg, ctx.base
    seqs = encode_pairs(rows, ctx.tok, c.max_len, c.max_prompt_len)
    uniq, where = {}, []
    for ids, labels in seqs:
        where.append(uniq.setdefault((tuple(ids), tuple(labels)), len(uniq)))
    where = np.asarray(where, np.int64)
    useqs = [(list(ids), list(labels)) for ids, labels in uniq]
    with ctx.bar(len(useqs), f"{desc} ({len(seqs)} sequences, {len(useqs)} distinct)") as bar:
        feats, acts = rewards.encode_lower(b["lower"], b["lo_p"], useqs, length=c.max_len,
                                           pad_id=ctx.tok.pad_id, batch_size=c.encode_batch,
                                           keep_activations=keep, progress=bar.update)
    out = {"feats": feats[where]}
    if keep:
        from mtalign_jax.data import pipeline

        padded = pipeline.pad_rows(seqs, c.max_len, ctx.tok.pad_id)
        idx, lab = dpo.response_positions(padded["labels"])
        out.update(x=acts[where], attention_mask=padded["attention_mask"], resp_idx=idx,
                   resp_labels=lab)
    return out


def stage_rm_engagement(ctx: Context) -> dict:
    """Three engagement RMs on disjoint parts of chitchat; held-out pair accuracy of each."""
    rm_rows = ctx.results["data"]["rm"]
    out, heads = {}, {}
    test = _encode_pairs(ctx, rm_rows["test"], "encode engagement test pairs", keep=True)
    n_test = len(rm_rows["test"])
    for role in ROLES:
        enc = _encode_pairs(ctx, rm_rows[role], f"encode {role} pairs", keep=False)
        n = len(rm_rows[role])
        rm = rewards.fit_bradley_terry(enc["feats"][:n], enc["feats"][n:])
        acc, se = rewards.pair_accuracy(rm, test["feats"][:n_test], test["feats"][n_test:])
        train_acc, _ = rewards.pair_accuracy(rm, enc["feats"][:n], enc["feats"][n:])
        # The judge's "engaging" threshold: the median score of its own training responses.
        heads[role] = {**rm.to_dict(), "threshold": float(np.median(rm.score(enc["feats"])))}
        out[role] = {"train_pairs": n, "heldout_pairs": n_test, "heldout_accuracy": acc,
                     "heldout_accuracy_se": se, "train_accuracy": train_acc}
    return {"roles": out, "heads": heads, "test": test}


def rm_of(ctx: Context, role: str) -> rewards.LinearRM:
    return rewards.LinearRM.from_dict(ctx.results["rm_engagement"]["heads"][role])


# ------------------------------------------------------------------------------------ samples


def _base_policy(ctx: Context) -> sampler.Policy:
    return sampler.Policy(upper_params=ctx.base["up_p"], head=ctx.base["head"])


def _sample(ctx: Context, prompts: list[str], policy: sampler.Policy, n: int, desc: str,
            temperature: float, rng, keep_acts: bool = False) -> sampler.Samples:
    b, c = ctx.base, ctx.cfg
    ids = [_chat(ctx.tok, p) for p in prompts]
    with ctx.bar(len(ids), desc) as bar:
        return sampler.generate(b["lower"], b["upper"], b["lo_p"], policy, ctx.tok, ids,
                                max_new_tokens=c.max_new_tokens, rng=rng, n=n,
                                temperature=temperature, top_k=50 if temperature else 0,
                                batch_size=c.sample_batch, keep_acts=keep_acts,
                                progress=bar.update)


def stage_samples(ctx: Context) -> dict:
    """The base model's own samples (`sample_temperature`, top-k 50): N per training prompt of
    each objective, N per held-out arithmetic prompt. The RM features and the lower-trunk
    activations that DPO reads (`samples`) come from the sampling pass itself."""
    c, d = ctx.cfg, ctx.results["data"]
    rng = jax.random.PRNGKey(c.seed)
    out = {}
    for i, (name, rows) in enumerate((("accuracy/train", d["arith"]["train"]),
                                      ("accuracy/heldout", d["arith"]["heldout"]),
                                      ("engagement/train", d["eng"]["train"]))):
        s = _sample(ctx, [r["prompt"] for r in rows], _base_policy(ctx), c.samples_per_prompt,
                    f"sample {name}", c.sample_temperature, jax.random.fold_in(rng, i),
                    keep_acts=True)
        out[name] = {"texts": s.texts, "feats": s.features(),
                     "tokens": int(sum(len(t) for t in s.tokens)),
                     "samples": {"prompt_ids": s.prompt_ids, "ids": s.tokens,
                                 "prompt_x": s.prompt_x, "x": s.resp_x}}
    return out


# -------------------------------------------------------------------------------------- pairs


def _grade(rows, texts, n):
    from mtalign_jax.eval.grading import grade_exact_int

    return np.asarray([float(grade_exact_int(texts[i * n + j], rows[i]["answer"]))
                       for i in range(len(rows)) for j in range(n)])


def _add_gold_pairs(pairs: list, rows, texts, correct, n: int, need: int) -> int:
    """Too few natural pairs (few correct samples; --quick's 8 new tokens): add the generator's
    exact answer as chosen vs each wrong sample as rejected until `need` pairs exist; returns
    how many were added (reported beside the natural pairs)."""
    added = 0
    for i, r in enumerate(rows):
        for j in range(n):
            if len(pairs) >= need:
                return added
            if correct[i * n + j] < 0.5:
                pairs.append({"prompt": r["prompt"], "chosen": f"The answer is {r['answer']}.",
                              "rejected": texts[i * n + j], "objective": "accuracy",
                              "answer": r["answer"], "gold": True, "prompt_index": i,
                              "chosen_sample": None, "rejected_sample": j})
                added += 1
    return added


def stage_pairs(ctx: Context) -> dict:
    """make_pairs on the samples: graded exactly (accuracy), scored by the labeller
    (engagement); the accuracy outcome RM; held-out accuracy pairs."""
    from mtalign_jax.make_pairs import pairs_from_scores

    c, d, s = ctx.cfg, ctx.results["data"], ctx.results["samples"]
    n = c.samples_per_prompt
    split = lambda xs: [list(xs[i * n:(i + 1) * n]) for i in range(len(xs) // n)]  # noqa: E731

    acc_rows = d["arith"]["train"]
    acc_texts = s["accuracy/train"]["texts"]
    correct = _grade(acc_rows, acc_texts, n)
    indexed = lambda rows: [dict(r, prompt_index=i) for i, r in enumerate(rows)]  # noqa: E731
    acc_pairs, acc_stats = pairs_from_scores(indexed(acc_rows), split(acc_texts),
                                             split(correct), objective="accuracy")
    acc_stats["gold_pairs"] = _add_gold_pairs(acc_pairs, acc_rows, acc_texts, correct, n,
                                              need=max(c.pairs_per_step // 2, 1))
    eng_rows = d["eng"]["train"]
    labeller = rm_of(ctx, "labeller")
    eng_scores = labeller.score(s["engagement/train"]["feats"])
    eng_pairs, eng_stats = pairs_from_scores(indexed(eng_rows),
                                             split(s["engagement/train"]["texts"]),
                                             split(eng_scores), objective="engagement",
                                             tie_eps=1e-6)
    # Accuracy outcome RM: features of the sampled solutions -> graded correctness.
    acc_rm = rewards.fit_logistic(s["accuracy/train"]["feats"], correct)
    held_rows = d["arith"]["heldout"]
    held_texts = s["accuracy/heldout"]["texts"]
    held_correct = _grade(held_rows, held_texts, n)
    pred = acc_rm.score(s["accuracy/heldout"]["feats"]) > 0
    rm_acc = float(np.mean(pred == (held_correct > 0.5)))
    # Held-out accuracy pairs: every correct x incorrect sample of a held-out prompt (capped).
    held_pairs = []
    for i, r in enumerate(held_rows):
        t, g = held_texts[i * n:(i + 1) * n], held_correct[i * n:(i + 1) * n]
        good = [j for j in range(n) if g[j] > 0.5]
        bad = [j for j in range(n) if g[j] < 0.5]
        combos = [(a, b) for a in good for b in bad if t[a] != t[b]]
        for a, b in combos[:c.max_heldout_pairs_per_prompt]:
            held_pairs.append({"prompt": r["prompt"], "chosen": t[a], "rejected": t[b],
                               "objective": "accuracy", "answer": r["answer"],
                               "prompt_index": i, "chosen_sample": a, "rejected_sample": b})
    held_gold = _add_gold_pairs(held_pairs, held_rows, held_texts, held_correct, n,
                                 need=c.heldout_pairs_min)
    # The pair files the experiments read (experiments/common.py), with their held-out siblings
    # (the held-out pairs this demo scores: accuracy from held-out prompts, the human test pairs)
    for name, rows in (("pairs_accuracy", acc_pairs), ("pairs_engagement", eng_pairs),
                       ("heldout_accuracy", held_pairs),
                       ("heldout_engagement", d["rm"]["test"])):
        with open(os.path.join(ctx.workdir, f"{name}.jsonl"), "w") as f:
            for p in rows:
                f.write(json.dumps(p, default=str) + "\n")
    return {"pairs": {"accuracy": acc_pairs, "engagement": eng_pairs},
            "stats": {"accuracy": acc_stats, "engagement": eng_stats},
            "base_sample_accuracy": float(correct.mean()),
            "heldout_pairs": held_pairs, "heldout_gold_pairs": held_gold,
            "accuracy_rm": {**acc_rm.to_dict()},
            "accuracy_rm_eval": {"heldout_samples": int(len(held_correct)),
                                 "heldout_accuracy": rm_acc,
                                 "heldout_accuracy_se": float(np.sqrt(
                                     rm_acc * (1 - rm_acc) / max(len(held_correct), 1))),
                                 "heldout_base_rate": float(held_correct.mean())}}


# ------------------------------------------------------------------------------------- encode


def _reference(ctx: Context, enc: dict) -> np.ndarray:
    b = ctx.base
    lp = dpo.sequence_logps(b["upper"], b["up_p"], b["head"], enc, ctx.cfg.encode_batch)
    p = lp.shape[0] // 2
    return np.stack([lp[:p], lp[p:]], axis=1)


def _sample_rows(ctx: Context, pairs: list[dict], smp: dict) -> dict:
    """DPO rows (chosen rows then rejected rows) of pairs of the base model's samples, with
    the lower activations the sampling pass kept: nothing is re-encoded. The prompt keeps its
    last `max_prompt_len` tokens (and fits `max_len` with the response); a side that is not a
    sample (a gold answer, --quick only) is encoded through the lower trunk."""
    from mtalign_jax.data import pipeline

    c, tok, n = ctx.cfg, ctx.tok, ctx.cfg.samples_per_prompt
    seqs, xs, todo = [], [], []
    for side in ("chosen", "rejected"):
        for p in pairs:
            j = p.get(f"{side}_sample")
            if j is None:
                todo.append(len(seqs))
                seqs.append(tok.encode_prompt_response(p["prompt"], p[side],
                                                       max_prompt_len=c.max_prompt_len,
                                                       max_len=c.max_len))
                xs.append(None)
                continue
            r = p["prompt_index"] * n + j
            resp = smp["ids"][r][:c.max_len - 1]
            keep = min(len(smp["prompt_ids"][r]), c.max_prompt_len, c.max_len - len(resp))
            seqs.append((smp["prompt_ids"][r][-keep:] + resp, [-100] * keep + resp))
            xs.append(np.concatenate([smp["prompt_x"][r][-keep:], smp["x"][r][:len(resp)]]))
    if todo:
        b = ctx.base
        _, acts = rewards.encode_lower(b["lower"], b["lo_p"], [seqs[i] for i in todo],
                                       length=c.max_len, pad_id=tok.pad_id,
                                       batch_size=c.encode_batch, keep_activations=True)
        for i, a in zip(todo, acts):
            xs[i] = a[:len(seqs[i][0])]
    padded = pipeline.pad_rows(seqs, c.max_len, tok.pad_id)
    x = np.zeros((len(seqs), c.max_len, xs[0].shape[-1]), np.float32)
    for i, a in enumerate(xs):
        x[i, :len(a)] = a
    idx, lab = dpo.response_positions(padded["labels"])
    return {"x": x, "attention_mask": padded["attention_mask"], "resp_idx": idx,
            "resp_labels": lab}


def stage_encode(ctx: Context) -> dict:
    """Lower-trunk activations of every pair sequence (from the sampling pass for the
    samples' pairs; the human engagement test pairs were encoded with the RMs), shared by
    every method, and the base model's reference log-probs."""
    pr, rm, sm = ctx.results["pairs"], ctx.results["rm_engagement"], ctx.results["samples"]
    if not pr["pairs"]["accuracy"] or not pr["pairs"]["engagement"]:
        raise RuntimeError(f"no training pairs for an objective: {pr['stats']}")
    parts = [_sample_rows(ctx, pr["pairs"][o], sm[f"{o}/train"]["samples"]) for o in OBJECTIVES]
    train = _cat_rows(parts)
    train["objective"] = np.concatenate([np.full(len(pr["pairs"][o]), i, np.int32)
                                         for i, o in enumerate(OBJECTIVES)])
    train["ref"] = _reference(ctx, train)
    held_acc = _sample_rows(ctx, pr["heldout_pairs"], sm["accuracy/heldout"]["samples"])
    held_acc["ref"] = _reference(ctx, held_acc)
    held_eng = dict(rm["test"])
    held_eng["ref"] = _reference(ctx, held_eng)
    return {"train": train, "heldout": {"accuracy": held_acc, "engagement": held_eng}}


def _cat_rows(parts: list[dict]) -> dict:
    """Concatenate pair-row sets (each chosen rows then rejected rows) into one such set;
    response index arrays are padded to the widest."""
    r = max(p["resp_idx"].shape[1] for p in parts)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, r - a.shape[1])), constant_values=v)  # noqa
    out = {}
    for half in (0, 1):
        for p in parts:
            m = p["x"].shape[0] // 2
            sl = slice(half * m, (half + 1) * m)
            for k, v in (("x", p["x"][sl]), ("attention_mask", p["attention_mask"][sl]),
                         ("resp_idx", pad(p["resp_idx"][sl], 0)),
                         ("resp_labels", pad(p["resp_labels"][sl], -100))):
                out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


# -------------------------------------------------------------------------------------- train


def methods(cfg: DemoConfig) -> dict:
    """name -> (number of heads, objectives each step draws from, routed)."""
    return {"MAH-DPO": (2, ["accuracy", "engagement"], True),
            "DPO (accuracy only)": (1, ["accuracy"], False),
            "DPO (engagement only)": (1, ["engagement"], False),
            "DPO (mixed data)": (1, ["mixed"], False)}


def stage_train(ctx: Context) -> dict:
    """MAH-DPO (2 heads) and the three single-head DPO baselines, same steps and batch."""
    from mtalign_jax.models.heads import perturbed_heads

    c, b = ctx.cfg, ctx.base
    tr = ctx.results["encode"]["train"]
    ps = dpo.PairSet(x=tr["x"], attention_mask=tr["attention_mask"], resp_idx=tr["resp_idx"],
                     resp_labels=tr["resp_labels"], objective=tr["objective"], ref=tr["ref"])
    pools = {o: np.nonzero(ps.objective == i)[0] for i, o in enumerate(OBJECTIVES)}
    pools["mixed"] = np.arange(ps.n)
    out, trainers = {}, {}
    for mi, (name, (k, plan, routed)) in enumerate(methods(c).items()):
        heads = perturbed_heads(b["head"], k, c.head_init_noise if k > 1 else 0.0, c.head_seed)
        params = {"upper": b["up_p"], "heads": {"kernel": heads}}
        group = c.pairs_per_step if routed else None  # 2P rows / 2 heads
        if (k, routed) not in trainers:  # the three single-head baselines share one compile
            trainers[k, routed] = dpo.make_trainer(b["upper"], k, OBJECTIVES, beta=c.beta,
                                                   lr=c.lr, routed=routed, group_size=group)
        tx, step = trainers[k, routed]
        opt = tx.init(params)
        log = []
        batches = dpo.batches(pools, plan, c.pairs_per_step, c.steps, c.seed + mi)
        for pairs in tqdm(batches, total=c.steps, desc=f"train {name}"):
            params, opt, m = step(params, opt, ps.rows(pairs))
            m = jax.device_get(m)
            log.append({"loss": float(m["loss"]),
                        **{f"rewards/{o}/accuracy": float(m[f"rewards/{o}/accuracy"])
                           for o in OBJECTIVES if float(m[f"count/{o}"]) > 0}})
        out[name] = {"params": jax.device_get(params), "log": log}
    return out


# ----------------------------------------------------------------------------------- evaluate


def _se(p: float, n: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))


def stage_eval_preference(ctx: Context) -> dict:
    """Held-out preference accuracy of each trained model's implicit reward, per objective
    (MAH-DPO: the objective's own head)."""
    c, b = ctx.cfg, ctx.base
    held = ctx.results["encode"]["heldout"]
    out = {}
    for name, (k, plan, routed) in methods(c).items():
        params = ctx.results["train"][name]["params"]
        out[name] = {}
        for oi, o in enumerate(OBJECTIVES):
            head = params["heads"]["kernel"][oi if k > 1 else 0]
            lp = dpo.sequence_logps(b["upper"], params["upper"], jnp.asarray(head), held[o],
                                    c.encode_batch)
            acc, se = dpo.implicit_reward_accuracy(lp, held[o]["ref"])
            out[name][o] = {"accuracy": acc, "se": se, "pairs": int(held[o]["ref"].shape[0])}
    return out


def _policies(ctx: Context) -> dict:
    """Evaluated policy name -> (upper params, [D, V] head)."""
    from mtalign_jax.models.heads import mixed_kernel

    c, b = ctx.cfg, ctx.base
    tr = ctx.results["train"]
    pol = {"Base": (b["up_p"], b["head"])}
    for name in ("DPO (accuracy only)", "DPO (engagement only)", "DPO (mixed data)"):
        p = tr[name]["params"]
        pol[name] = (p["upper"], jnp.asarray(p["heads"]["kernel"][0]))
    p = tr["MAH-DPO"]["params"]
    for w in c.head_weights:
        pol[f"MAH-DPO w=({w[0]:g},{w[1]:g})"] = (
            p["upper"], mixed_kernel(jnp.asarray(p["heads"]["kernel"]), jnp.asarray(w)))
    return pol


def _gen_metrics(ctx: Context, acc_samples, eng_samples) -> dict:
    d = ctx.results["data"]
    rows = d["arith"]["eval"]
    correct = _grade(rows, acc_samples.texts, 1)
    judge = rm_of(ctx, "judge")
    thr = float(ctx.results["rm_engagement"]["heads"]["judge"]["threshold"])
    js = judge.score(eng_samples.features())
    engaging = (js > thr).astype(np.float64)
    acc = float(correct.mean())
    eng = float(engaging.mean())
    return {"accuracy": acc, "accuracy_se": _se(acc, len(correct)),
            "engagement": eng, "engagement_se": _se(eng, len(engaging)),
            "judge_score": float(js.mean()),
            "judge_score_se": float(js.std() / np.sqrt(max(len(js), 1))),
            "mean_new_tokens": float(np.mean([len(t) for t in acc_samples.tokens +
                                              eng_samples.tokens])),
            "examples": {"accuracy": acc_samples.texts[:2], "engagement": eng_samples.texts[:2]}}


def stage_eval_generation(ctx: Context, cached: dict | None = None, save=None) -> dict:
    """Greedy generations on the held-out prompts of both objectives for every policy, graded
    exactly (accuracy) and scored by the judge (engagement); then MAH-DPO (.5,.5) with guided
    decoding (continuing cache; engagement guide + accuracy RM, combined by the same weights).

    `cached`/`save` let the caller keep each policy's result as soon as it is done."""
    c, d, b = ctx.cfg, ctx.results["data"], ctx.base
    out = dict(cached or {})
    acc_prompts = [r["prompt"] for r in d["arith"]["eval"]]
    eng_prompts = [r["prompt"] for r in d["eng"]["eval"]]
    rng = jax.random.PRNGKey(c.seed + 1000)
    todo = {name: sampler.Policy(upper_params=up, head=head)
            for name, (up, head) in _policies(ctx).items() if name not in out}
    if todo:
        ids = [_chat(ctx.tok, p) for p in acc_prompts + eng_prompts]
        # One batch per objective when it fits (the 48 + 48 eval prompts as 2 x 48 rows, not
        # 2 x 64 with 32 idle rows; the short arithmetic prompts get their own prompt bucket).
        per = min(len(acc_prompts), c.sample_batch)
        with ctx.bar(len(ids) * len(todo), f"generate ({len(todo)} policies)") as bar:
            gens = sampler.generate_many(b["lower"], b["upper"], b["lo_p"], todo, ctx.tok, ids,
                                         max_new_tokens=c.max_new_tokens, rng=rng,
                                         batch_size=per, progress=bar.update)
        n = len(acc_prompts)
        for name, s in gens.items():
            part = lambda lo, hi: sampler.Samples(s.tokens[lo:hi], s.texts[lo:hi],  # noqa: E731
                                                  s.feat_last[lo:hi], s.feat_mean[lo:hi])
            out[name] = _gen_metrics(ctx, part(0, n), part(n, len(s.texts)))
        if save:
            save(out)
    name = "MAH-DPO w=(0.5,0.5) + guided decoding"
    if name not in out:
        guide = _guide_of(ctx)
        up, head = _policies(ctx)["MAH-DPO w=(0.5,0.5)"]
        pol = sampler.Policy(upper_params=up, head=head)
        pause = sampler.step_delimiters(ctx.tok)
        res = {}
        for oname, prompts in (("accuracy", acc_prompts), ("engagement", eng_prompts)):
            ids = [_chat(ctx.tok, p) for p in prompts]
            with ctx.bar(len(ids), f"guided {oname}") as bar:
                res[oname], steps = sampler.guided_generate(
                    b["lower"], b["upper"], b["lo_p"], pol, ctx.tok, ids, guide=guide,
                    k=c.guide_k, max_new_tokens=c.max_new_tokens, step_tokens=c.step_tokens,
                    rng=jax.random.fold_in(rng, 7), pause_ids=pause,
                    temperature=c.guide_temperature, batch_size=c.guide_batch,
                    progress=bar.update)
            res[oname + "_steps"] = steps
        out[name] = _gen_metrics(ctx, res["accuracy"], res["engagement"])
        out[name]["guided_steps"] = res["accuracy_steps"] + res["engagement_steps"]
        out[name]["k"] = c.guide_k
        if save:
            save(out)
    plain, best = sampled_name(c), f"MAH-DPO w=(0.5,0.5) + best-of-{c.guide_k}"
    if plain not in out or best not in out:
        out.update(_best_of_n(ctx, acc_prompts, eng_prompts, jax.random.fold_in(rng, 8)))
        if save:
            save(out)
    return out


def sampled_name(cfg: DemoConfig) -> str:
    return f"MAH-DPO w=(0.5,0.5) sampled (T={cfg.guide_temperature:g})"


def _guide_of(ctx: Context):
    """The guided decoder's and best-of-N's score: 0.5 x engagement guide + 0.5 x accuracy RM
    (each standardised), from the sampler's features."""
    guide_eng = rm_of(ctx, "guide")
    guide_acc = rewards.LinearRM.from_dict(ctx.results["pairs"]["accuracy_rm"])
    return rewards.LinearScore.mix([(0.5, guide_eng), (0.5, guide_acc)])


def _best_of_n(ctx: Context, acc_prompts, eng_prompts, rng) -> dict:
    """Plain sampling and best-of-N (the same K whole responses a prompt at
    `guide_temperature`, top-k 50; the first one is plain sampling; best-of-N keeps the one the
    guide scores highest)."""
    c, b = ctx.cfg, ctx.base
    up, head = _policies(ctx)["MAH-DPO w=(0.5,0.5)"]
    pol = sampler.Policy(upper_params=up, head=head)
    ids = [_chat(ctx.tok, p) for p in acc_prompts + eng_prompts]
    k = c.guide_k
    with ctx.bar(len(ids), f"sample {k} a prompt (plain, best-of-{k})") as bar:
        s = sampler.generate(b["lower"], b["upper"], b["lo_p"], pol, ctx.tok, ids,
                             max_new_tokens=c.max_new_tokens, rng=rng, n=k,
                             temperature=c.guide_temperature,
                             top_k=50, batch_size=c.sample_batch, progress=bar.update)
    scores = np.asarray(_guide_of(ctx)(s.features()), np.float64).reshape(len(ids), k)
    first = np.arange(len(ids)) * k
    best = first + np.argmax(scores, axis=1)
    n = len(acc_prompts)
    out = {}
    for name, rows in ((sampled_name(c), first), (f"MAH-DPO w=(0.5,0.5) + best-of-{k}", best)):
        pick = lambda r: sampler.Samples([s.tokens[i] for i in r], [s.texts[i] for i in r],  # noqa
                                         s.feat_last[r], s.feat_mean[r])
        out[name] = _gen_metrics(ctx, pick(rows[:n]), pick(rows[n:]))
    out[f"MAH-DPO w=(0.5,0.5) + best-of-{k}"]["k"] = k
    return out


STAGES: dict[str, Any] = {
    "data": stage_data,
    "rm_engagement": stage_rm_engagement,
    "samples": stage_samples,
    "pairs": stage_pairs,
    "encode": stage_encode,
    "train": stage_train,
    "eval_preference": stage_eval_preference,
    "eval_generation": stage_eval_generation,
}
