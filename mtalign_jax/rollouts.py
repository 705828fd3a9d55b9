"""Monte-Carlo rollouts from every step prefix of a policy's solutions: step labels and values.

    python -m mtalign_jax.rollouts --config configs/rollouts_math.py:tiny --workdir W

For each solution y_{1:n} (given by the data, or written by the policy first with
`solutions="generate"`) and each step prefix y_{1:t}, the prefix is encoded ONCE (prefill), its
KV cache is repeated M times (`kv_cache.repeat`) and M completions are sampled from the copies
(never re-encoding the prefix). Then, per `mode` (PAPER.md sections 2.2-2.3):
- "verifiable": each completion's final answer is graded (`eval/grading.py`): z_{t,m} in {0,1};
  mc_success_t = mean_m z_{t,m}; step_values = hindsight targets r_t + gamma^(n-t) mean_m z;
  r_t (`step_reward`): "mc_hard" 1[mc_success_t > 0] (default), "labels" (the row's own
  step_labels), "zero", or "prm" (P(good) of the step PRM at `prm`, through eval/scoring.py).
- "case_a": a calibrated RM judge (`judge`, calibrated on `judge_calibration`, human ratings)
  judges each of the M completions; step_labels = majority (`case_a_majority_labels`).
- "case_b": no rollouts; the judge scores the observed prefix directly (expensive rollouts).

Outputs in W: `prefixes.jsonl` (one line per finished prefix, flushed: a rerun skips the
prefixes already there, so the command is resumable), then `labels.jsonl` (one line per
solution: prompt, steps, answer, step_labels, step_values, mc_success, z), which
`configs/value_math.py` (step_values) and `configs/prm_math.py` (step_labels) train on;
`roles.json` / `calibration.json` record the judge and its calibration.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.decoding import sampling
from mtalign_jax.models import kv_cache

MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


# ----------------------------------------------------------------------------------------------
# sampling from cached prefixes


def sample_continuations(model, params, prefixes: Sequence[Sequence[int]], m: int, rng, *,
                         max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                         top_p: float = 1.0, stop_ids: Sequence[int] = (), pad_id: int = 0,
                         batch_rows: Optional[int] = None, reuse_cache: bool = True
                         ) -> list[list[list[int]]]:
    """M sampled continuations of each prefix: out[i][j] = token list of sample j of prefix i.

    reuse_cache=True (the rollout engine): one prefill of the B prefixes, the cache and the
    last logits repeated M times (row b -> rows b*M..b*M+M-1). reuse_cache=False (reference for
    tests): every prefix is repeated M times and re-encoded. Both decode with the same `rng`
    (split per row), so they sample the same tokens. `batch_rows` pads the batch of prefixes
    to a fixed size (dummy rows start finished) so repeated calls reuse one compilation.
    """
    n = len(prefixes)
    b = batch_rows or n
    if n > b:
        raise ValueError(f"{n} prefixes but batch_rows={b}")
    padded = list(prefixes) + [[pad_id]] * (b - n)
    ids, mask = sampling.pad_prompts(padded, pad_id)
    mask[n:] = 0
    n_steps = sampling.bucket_size(max_new_tokens, [2 ** i for i in range(4, 16)])
    cache_len = ids.shape[1] + n_steps
    if reuse_cache:
        last, cache = sampling.prefill(model, params, ids, mask, cache_len)
        cache = kv_cache.repeat(cache, m)
        last = jnp.repeat(last, m, axis=0)
    else:
        last, cache = sampling.prefill(model, params, np.repeat(ids, m, axis=0),
                                       np.repeat(mask, m, axis=0), cache_len)
    done = np.repeat(np.arange(b) >= n, m)
    out = sampling.decode_steps(model, params, cache, last, rng, n_steps,
                                temperature=temperature, top_k=top_k, top_p=top_p,
                                stop_ids=stop_ids, done=done, limit=max_new_tokens,
                                pad_id=pad_id)
    toks, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    return [[toks[i * m + j, :lengths[i * m + j]].tolist() for j in range(m)]
            for i in range(n)]


# ----------------------------------------------------------------------------------------------
# solutions and prefixes


def normalise_steps(steps: Sequence[str]) -> list[str]:
    """Math steps each ending in a blank line (the shared segmentation's delimiter)."""
    return [s if s.endswith("\n\n") else s.rstrip() + "\n\n" for s in steps if s.strip()]


def load_solutions(cfg) -> list[dict]:
    """[{id, prompt, steps, answer, step_labels?}] from data.files (JSONL with prompt, answer,
    steps or response) or a built-in source (gsm8k, champ, champ_fws, arithmetic, math500)."""
    from mtalign_jax.data.segment import segment_math
    from mtalign_jax.data.sources import _io, load_source

    rows = []
    if cfg.data.files:
        for path in str(cfg.data.files).split(","):
            for line, r in _io.read_jsonl(path.strip()):
                prompt = _io.get(r, "prompt", str, path, line)
                steps = r.get("steps") or segment_math(_io.get(r, "response", str, path, line))
                rows.append({"id": str(r.get("id", f"{os.path.basename(path)}:{line}")),
                             "prompt": prompt, "steps": steps,
                             "answer": str(_io.get(r, "answer", (str, int), path, line)),
                             "step_labels": r.get("step_labels")})
    else:
        opts = {"n": int(cfg.data.limit)} if cfg.data.source == "arithmetic" else {}
        for i, r in enumerate(load_source(cfg.data.source, split=cfg.data.split, **opts)):
            steps = r.get("steps") or segment_math(r.get("response") or r["solution"])
            rows.append({"id": str(r.get("id", f"{cfg.data.source}:{i}")), "prompt": r["prompt"],
                         "steps": steps, "answer": str(r["answer"]),
                         "step_labels": r.get("step_labels")})
    rows = rows[:int(cfg.data.limit)] if cfg.data.limit else rows
    for r in rows:
        r["steps"] = normalise_steps(r["steps"])
    return [r for r in rows if r["steps"]]


def prompt_ids(tok, prompt: str, system: str) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    return tok.encode_chat(msgs, add_generation_prompt=True)


def generate_solutions(model, params, tok, rows: list[dict], cfg) -> list[dict]:
    """Replace each row's steps by the policy's own greedy solution, segmented into steps."""
    from mtalign_jax.data.segment import segment_math

    prompts = [prompt_ids(tok, r["prompt"], cfg.system) for r in rows]
    out = []
    bs = int(cfg.rollouts.batch_prefixes)
    for a in range(0, len(rows), bs):
        res = sampling.generate(model, params, prompts[a:a + bs],
                                max_new_tokens=int(cfg.rollouts.solution_tokens),
                                temperature=0.0, tokenizer=tok)
        for r, g in zip(rows[a:a + bs], res):
            out.append(dict(r, steps=normalise_steps(segment_math(g.text)), step_labels=None))
    return [r for r in out if r["steps"]]


# ----------------------------------------------------------------------------------------------
# labelling


def grade(cfg, text: str, answer: str) -> bool:
    from mtalign_jax.eval import grading

    if cfg.grader == "int":
        return grading.grade_exact_int(text, int(answer))
    return grading.grade_math(text, answer)


def _read_done(path: str) -> dict:
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run
                done[(rec["id"], rec["t"])] = rec
    return done


def make_judge(cfg, workdir: str):
    """The calibrated RM judge of case A/B (its calibration and role written to W)."""
    from mtalign_jax.data.sources import _io
    from mtalign_jax.eval import judges, scoring

    if not cfg.judge:
        raise ValueError(f"mode={cfg.mode!r} needs a judge: --config.judge=RM_WORKDIR")
    j = judges.Judge(scoring.load_reward_model(cfg.judge), objective=cfg.objective,
                     role="labeler")
    if not cfg.judge_calibration:
        raise ValueError("a judge is calibrated against held-out human ratings before it labels "
                         "anything: --config.judge_calibration=FILE (JSONL prompt, response, "
                         "rating)")
    rows = [(line, r) for line, r in _io.read_jsonl(cfg.judge_calibration)]
    p = [_io.get(r, "prompt", str, cfg.judge_calibration, ln) for ln, r in rows]
    s = [_io.get(r, "response", str, cfg.judge_calibration, ln) for ln, r in rows]
    h = [_io.get(r, "rating", (int, float), cfg.judge_calibration, ln) for ln, r in rows]
    half = len(p) // 2
    metrics = judges.calibrate(j, p[:half], s[:half], h[:half],
                               human_threshold=cfg.human_threshold,
                               report=(p[half:], s[half:], h[half:]))
    with open(os.path.join(workdir, "calibration.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    judges.write_roles(os.path.join(workdir, "roles.json"), [j])
    print(f"[rollouts] judge {j.name}: {json.dumps(metrics)}", file=sys.stderr)
    return j


def solution_record(cfg, row: dict, recs: list[dict], prm=None) -> dict:
    """The per-solution line of labels.jsonl from its prefixes' records (t = 1..n)."""
    from mtalign_jax.losses import case_a_majority_labels, hindsight_value_targets

    n = len(row["steps"])
    out = {"id": row["id"], "prompt": row["prompt"], "steps": row["steps"],
           "answer": row["answer"]}
    if cfg.mode == "case_b":
        out["step_scores"] = [r["score"] for r in recs]
        out["step_labels"] = [int(r["verdict"]) for r in recs]
        return out
    z = np.asarray([r["z"] for r in recs], np.float32)  # [n, M]
    mc = z.mean(axis=1)
    out["z"], out["mc_success"] = z.astype(int).tolist(), mc.tolist()
    if cfg.mode == "case_a":
        out["step_labels"] = np.asarray(case_a_majority_labels(jnp.asarray(z))).tolist()
        return out
    how = cfg.step_reward
    if how == "labels" and row.get("step_labels"):
        r_t = np.asarray([max(0.0, float(x)) for x in row["step_labels"][:n]], np.float32)
    elif how == "prm":
        from mtalign_jax.eval import scoring

        r_t = scoring.score_steps(prm, [row["prompt"]], [row["steps"]])[0].astype(np.float32)
    elif how == "zero":
        r_t = np.zeros((n,), np.float32)
    else:
        r_t = (mc > 0).astype(np.float32)
    out["step_labels"] = (mc > 0).astype(int).tolist()
    out["step_rewards"] = r_t.tolist()
    out["step_values"] = np.asarray(hindsight_value_targets(
        jnp.asarray(r_t), jnp.asarray(z), float(cfg.gamma))).tolist()
    return out


def run(cfg, workdir: str) -> dict:
    """Label every step prefix (resumable); returns a summary."""
    from tqdm.auto import tqdm

    from mtalign_jax.hf.load import load_pretrained

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))
    model, params, tok = load_pretrained(cfg.policy, num_heads=1, dtype=cfg.dtype)
    rows = load_solutions(cfg)
    if cfg.solutions == "generate":
        rows = generate_solutions(model, params, tok, rows, cfg)
    judge = make_judge(cfg, workdir) if cfg.mode in ("case_a", "case_b") else None
    prm = None
    if cfg.mode == "verifiable" and cfg.step_reward == "prm":
        from mtalign_jax.eval import scoring

        prm = scoring.load_reward_model(cfg.prm)
    pre_path = os.path.join(workdir, "prefixes.jsonl")
    done = _read_done(pre_path)
    todo = [(r, t) for r in rows for t in range(1, len(r["steps"]) + 1)
            if (r["id"], t) not in done]
    rc = cfg.rollouts
    m, bs = int(rc.m), int(rc.batch_prefixes)
    stop = [i for i in (tok.eos_id, tok.im_end_id) if i is not None]
    root = jax.random.PRNGKey(cfg.seed)
    f = open(pre_path, "a")
    bar = tqdm(total=len(todo), desc="rollouts", dynamic_ncols=True)
    for a in range(0, len(todo), bs):
        chunk = todo[a:a + bs]
        texts = ["".join(r["steps"][:t]) for r, t in chunk]
        recs = []
        if cfg.mode == "case_b":
            verdicts = judge.verdicts([r["prompt"] for r, _ in chunk], texts)
            scores = judge.scores([r["prompt"] for r, _ in chunk], texts)
            recs = [{"score": float(s), "verdict": bool(v)} for s, v in zip(scores, verdicts)]
        else:
            prefixes = [prompt_ids(tok, r["prompt"], cfg.system) + tok.encode(x)
                        for (r, _), x in zip(chunk, texts)]
            rng = jax.random.fold_in(root, a)
            samples = sample_continuations(
                model, params, prefixes, m, rng, max_new_tokens=int(rc.max_new_tokens),
                temperature=float(rc.temperature), top_k=int(rc.top_k), top_p=float(rc.top_p),
                stop_ids=stop, pad_id=tok.pad_id, batch_rows=bs)
            for (r, t), x, comps in zip(chunk, texts, samples):
                full = [x + tok.decode(c, skip_special=True) for c in comps]
                if cfg.mode == "verifiable":
                    z = [int(grade(cfg, y, r["answer"])) for y in full]
                else:
                    z = judge.verdicts([r["prompt"]] * m, full).astype(int).tolist()
                rec = {"z": z}
                if rc.keep_text:
                    rec["completions"] = [y[len(x):] for y in full]
                recs.append(rec)
        for (r, t), rec in zip(chunk, recs):
            rec = {"id": r["id"], "t": t, **rec}
            f.write(json.dumps(rec) + "\n")
            done[(r["id"], t)] = rec
        f.flush()
        bar.update(len(chunk))
    bar.close()
    f.close()
    out_path = os.path.join(workdir, "labels.jsonl")
    with open(out_path + ".tmp", "w") as g:
        for r in rows:
            recs = [done[(r["id"], t)] for t in range(1, len(r["steps"]) + 1)]
            g.write(json.dumps(solution_record(cfg, r, recs, prm)) + "\n")
    os.replace(out_path + ".tmp", out_path)
    summary = {"solutions": len(rows), "prefixes": sum(len(r["steps"]) for r in rows),
               "sampled_now": len(todo), "labels": out_path}
    print(json.dumps(summary))
    return summary


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Rollouts config file[:variant].",
                                             lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Output directory.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(lambda _: run(config.value, workdir.value) and None, argv=argv)  # exit status 0


if __name__ == "__main__":
    main()
