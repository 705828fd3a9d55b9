"""Evaluation: run one decoding method over an eval set, write per-example outputs and a summary.

    python -m mtalign_jax.evaluate --config configs/eval_math.py:tiny --workdir W \
        [--config.method=guided --config.guide.prms=PRM_WORKDIR]
    python -m mtalign_jax.evaluate --table W1,W2,W3      # one table, a row per workdir

Methods (`mtalign_jax.decoding.guided`): greedy, sample (plain sampling), best_of_n (N whole
responses reranked by an outcome RM), guided (PRM-guided, continuing KV cache), reencode (the
same search re-encoding the prefix every step), text_chunk (re-tokenising the decoded text).

Outputs in W: `outputs.jsonl` (one flushed line per example: id, prompt, response, tokens,
sampled_tokens, finish_reason, steps, seconds, correct, judge scores, student reply); a rerun
skips the examples already there (resume). `summary.json` and `summary.md`: the paper's table
shape, objectives as columns and the method as the row (PAPER.md 5.3 metric maps):
  accuracy        fraction correct (math-verify on the last \\boxed{}, or exact integer)
  <objective>     mean judge metric: P(class 1) for a classifier judge (engagement; tutoring
                  after the simulated student's turn), sigmoid(score) for a Bradley-Terry RM
                  (human values); plus `<objective>>0.5`, the fraction above 0.5
  tokens          mean kept tokens per response; sampled: mean sampled tokens (all candidates)
  seconds         decoding wall time (total)
A model may not both guide and judge (`judges.check_roles`).

Tutoring (`student`): after the tutor's turn, a small local model prompted as the student writes
the student's next turn (greedy), and the judges score the dialogue with that turn (offline
stand-in for the paper's GPT-4o student).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

METHODS = ("greedy", "sample", "best_of_n", "guided", "reencode", "text_chunk")
STUDENT_SYSTEM = ("You are a student in a programming tutoring session. Reply to the tutor's "
                  "last message as the student would, in one or two sentences, keeping the "
                  "same tone, style, understanding level and engagement level as before.")


# ----------------------------------------------------------------------------------------------
# config


def base_config():
    """Defaults shared by configs/eval_*.py."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.name = ""  # the table row's label (default: the method)
    c.seed = 0
    c.policy = "tiny"  # preset, HF dir, .gguf or our workdir
    c.dtype = "float32"
    c.head_weights = ""  # "0.5,0.5": MAH-DPO head mixing (with guidance: both together)
    c.method = "sample"
    c.domain = "math"  # guided step rule: math | dialogue | turn
    c.system = ""
    c.grader = ""  # "math" | "int" | "" (no verifiable objective)
    c.judges = ""  # "objective:RM_PATH,..." (evaluation RMs, never the guides)
    c.student = ""  # tutoring: the student simulator's model ("" = none)
    c.guide = ml_collections.ConfigDict()
    c.guide.prms = ""  # "PATH[,PATH]"
    c.guide.weights = ""  # "0.7,0.3"
    c.guide.objective = ""  # for a conditioned unified PRM
    c.data = ml_collections.ConfigDict()
    c.data.source = "arithmetic"
    c.data.path = ""
    c.data.split = "all"
    c.data.limit = 4
    c.data.prefix_turns = 2  # chitchat: turns in the conversation prefix
    c.data.options = ml_collections.ConfigDict()
    c.decoding = ml_collections.ConfigDict()
    c.decoding.num_candidates = 5
    c.decoding.temperature = 1.0
    c.decoding.top_k = 50
    c.decoding.top_p = 1.0
    c.decoding.max_new_tokens = 32
    c.decoding.max_step_tokens = 0  # 0: the domain's default
    c.decoding.max_steps = 0
    c.decoding.batch_size = 4
    return c


# ----------------------------------------------------------------------------------------------
# data


def load_examples(data) -> list[dict]:
    """Eval examples {id, prompt (str), answer (or None)} from the config's `data` block."""
    from mtalign_jax.data.sources import load_source

    opts = data.options.to_dict() if data.get("options") else {}
    rows = load_source(data.source, data.path or None, data.split, **opts)
    out = []
    for i, r in enumerate(rows):
        if data.source == "chitchat":
            from mtalign_jax.data.sources.chitchat import render

            turns = r["turns"][:data.prefix_turns]
            prompt = render(r["prompt"], turns)
        else:
            prompt = r["prompt"]
        out.append({"id": str(r.get("id") or r.get("unique_id") or i), "prompt": prompt,
                    "answer": r.get("answer")})
    return out[:data.limit] if data.limit else out


# ----------------------------------------------------------------------------------------------
# metrics


def judge_metric(rm, score: float) -> float:
    """The paper's metric map: sigmoid of a Bradley-Terry score, else the probability itself."""
    return 1.0 / (1.0 + math.exp(-score)) if rm.transform == "identity" else float(score)


def grade(grader: str, response: str, answer) -> bool | None:
    from mtalign_jax.eval import grading

    if not grader or answer is None:
        return None
    if grader == "math":
        return grading.grade_math(response, str(answer))
    if grader == "int":
        return grading.grade_exact_int(response, int(answer))
    raise ValueError(f"unknown grader {grader!r} (math, int, '')")


def summarise(records: list[dict], method: str) -> dict:
    """The summary row of a list of per-example records."""
    row = {"method": method, "n": len(records)}
    if not records:
        return row
    graded = [r["correct"] for r in records if r.get("correct") is not None]
    if graded:
        row["accuracy"] = float(np.mean(graded))
    for obj in sorted({k for r in records for k in r.get("metrics", {})}):
        vals = np.asarray([r["metrics"][obj] for r in records if obj in r.get("metrics", {})])
        row[obj] = float(vals.mean())
        row[f"{obj}>0.5"] = float((vals > 0.5).mean())
    row["tokens"] = float(np.mean([len(r["tokens"]) for r in records]))
    row["sampled"] = float(np.mean([r["sampled_tokens"] for r in records]))
    row["seconds"] = float(sum(r["seconds"] for r in records))
    return row


def render_table(rows: list[dict]) -> str:
    """Markdown table: methods as rows, objectives (and costs) as columns."""
    fixed = ("method", "n", "tokens", "sampled", "seconds")
    cols = ["method"] + sorted({k for r in rows for k in r if k not in fixed},
                               key=lambda k: (k != "accuracy", k)) + ["tokens", "sampled",
                                                                        "seconds", "n"]

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# decoding


def _decode_batch(config, model, params, tok, batch, guide, rng):
    from mtalign_jax.decoding import guided

    d = config.decoding
    msgs = [([{"role": "system", "content": config.system}] if config.system else [])
            + [{"role": "user", "content": ex["prompt"]}] for ex in batch]
    ids = [tok.encode_chat(m) for m in msgs]
    hw = [float(x) for x in config.head_weights.split(",")] if config.head_weights else None
    common = dict(rng=rng, head_weights=hw)
    m = config.method
    if m in ("greedy", "sample"):
        return guided.sample_plain(model, params, tok, ids, max_new_tokens=d.max_new_tokens,
                                   temperature=0.0 if m == "greedy" else d.temperature,
                                   top_k=d.top_k, top_p=d.top_p, **common)
    if m == "best_of_n":
        domain, k = guided.get_domain("turn", max_new_tokens=d.max_new_tokens,
                                      max_step_tokens=d.max_new_tokens), d.num_candidates
    else:
        domain, k = config.domain, d.num_candidates
    return guided.guided_generate(
        model, params, tok, ids, guide=guide, guide_prompts=[ex["prompt"] for ex in batch],
        num_candidates=k, domain=domain, max_new_tokens=d.max_new_tokens,
        max_step_tokens=d.max_step_tokens or None, max_steps=d.max_steps or None,
        temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
        prefix={"reencode": "reencode", "text_chunk": "text"}.get(m, "cache"), **common)


def _student_replies(student, batch, responses):
    from mtalign_jax.decoding.sampling import generate

    model, params, tok = student
    prompts = [tok.encode_chat([{"role": "system", "content": STUDENT_SYSTEM},
                                {"role": "user", "content": f"{ex['prompt']} {resp}\n\n"
                                                            f"Student:"}])
               for ex, resp in zip(batch, responses)]
    return [r.text.strip() for r in generate(model, params, prompts, max_new_tokens=64,
                                             tokenizer=tok)]


def run(config, workdir: str) -> dict:
    """Evaluate `config.method` on the eval set; returns the summary row."""
    import jax
    from tqdm.auto import tqdm

    import mtalign_jax
    from mtalign_jax.decoding import guided
    from mtalign_jax.eval import judges, scoring

    if config.method not in METHODS:
        raise ValueError(f"config.method: unknown method {config.method!r}; known: "
                         f"{', '.join(METHODS)}")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    examples = load_examples(config.data)
    out_path = os.path.join(workdir, "outputs.jsonl")
    done = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[r["id"]] = r
    todo = [ex for ex in examples if ex["id"] not in done]

    guide_paths = [p for p in config.guide.prms.split(",") if p]
    needs_guide = config.method in ("best_of_n", "guided", "reencode", "text_chunk")
    if needs_guide and not guide_paths:
        raise ValueError(f"config.guide.prms: method {config.method!r} needs a guide")
    weights = ([float(x) for x in config.guide.weights.split(",")] if config.guide.weights
               else None)
    guide_rms = [scoring.load_reward_model(p) for p in guide_paths] if needs_guide else []
    judge_list = []
    for item in (x for x in config.judges.split(",") if x):
        obj, path = item.split(":", 1)
        judge_list.append(judges.Judge(scoring.load_reward_model(path), obj, role="judge"))
    judges.check_roles(judge_list + [judges.Judge(rm, "guide", role="guide")
                                     for rm in guide_rms])
    guide = None
    if guide_rms:
        gs = [guided.RewardGuide(rm, objective=config.guide.objective or None)
              for rm in guide_rms]
        guide = gs[0] if len(gs) == 1 and weights is None else guided.CombinedGuide(gs, weights)

    model = params = tok = student = None
    if todo:
        model, params, tok = mtalign_jax.load_pretrained(config.policy, dtype=config.dtype)
        if config.student:
            student = (mtalign_jax.load_pretrained(config.student) if config.student !=
                       config.policy else (model, params, tok))
    key = jax.random.PRNGKey(config.seed)
    bs = config.decoding.batch_size
    with open(out_path, "a") as f, tqdm(total=len(todo), desc=config.method,
                                         dynamic_ncols=True) as bar:
        for a in range(0, len(todo), bs):
            batch = todo[a:a + bs]
            idx = [examples.index(ex) for ex in batch]
            keys = np.stack([np.asarray(jax.random.fold_in(key, i)) for i in idx])
            t0 = time.perf_counter()
            res = _decode_batch(config, model, params, tok, batch, guide, keys)
            secs = (time.perf_counter() - t0) / len(batch)
            responses = [r.text for r in res]
            students = _student_replies(student, batch, responses) if student else None
            judged = [r + (f"\n\nStudent: {students[i]}" if students else "")
                      for i, r in enumerate(responses)]
            scores = {j.objective: j.scores([ex["prompt"] for ex in batch], judged)
                      for j in judge_list}
            for i, (ex, r) in enumerate(zip(batch, res)):
                rec = {"id": ex["id"], "prompt": ex["prompt"], "response": r.text,
                       "tokens": r.tokens, "sampled_tokens": r.sampled_tokens,
                       "finish_reason": r.finish_reason, "steps": len(r.steps),
                       "seconds": secs, "correct": grade(config.grader, r.text, ex["answer"]),
                       "judge_scores": {o: float(s[i]) for o, s in scores.items()},
                       "metrics": {j.objective: judge_metric(j.rm, float(scores[j.objective][i]))
                                   for j in judge_list}}
                if students:
                    rec["student"] = students[i]
                f.write(json.dumps(rec) + "\n")
                f.flush()
                done[ex["id"]] = rec
            bar.update(len(batch))

    records = [done[ex["id"]] for ex in examples if ex["id"] in done]
    row = summarise(records, config.name or config.method)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump({"summary": row, "judges": [j.record() for j in judge_list],
                   "guides": guide_paths, "guide_weights": weights}, f, indent=2)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(render_table([row]))
    print(render_table([row]), end="")
    return row


def table(workdirs) -> str:
    """One markdown table from several evaluation workdirs' summary.json."""
    rows = []
    for w in workdirs:
        with open(os.path.join(w, "summary.json")) as f:
            rows.append(json.load(f)["summary"])
    return render_table(rows)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if "--table" in argv[1:]:
        i = argv.index("--table")
        print(table([w for w in argv[i + 1].split(",") if w]), end="")
        return
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Eval config file[:variant].",
                                             lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Output directory.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(lambda _: run(config.value, workdir.value) and None, argv=argv)


if __name__ == "__main__":
    main()
