"""Sample-and-judge preference pairs from a policy's own samples (issue 16, part 4).

    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:tiny --workdir W
    python -m mtalign_jax.make_pairs --config configs/make_pairs_arithmetic.py:mini --workdir W
    python -m mtalign_jax.make_pairs --config configs/make_pairs_tutor_engagement.py:mini \
        --workdir workdirs/pairs_tutor_engagement

For every prompt the policy samples N responses (batched, cached sampling, progress bar); each is
scored by the config's grader and the prompt yields one pair: its best response as `chosen`, its
worst as `rejected`. Prompts whose best and worst scores are equal (within `tie_eps`), or whose
best and worst texts are the same, are ties: dropped and counted. Graders (`config.grader`):

  exact_int  exact integer match for generated arithmetic (1 correct, 0 wrong)
  rm         a reward model (`config.rm`: a workdir of `python -m mtalign_jax.train --config
             configs/rm_*.py`, or an HF reward-model directory) scores each (prompt, response)
             in batches through `mtalign_jax.eval.scoring.score_texts`

Prompts come from `read_source(config.data.source, **config.data.options)`; the source's own
labels (`chosen`, `rejected`, `objective`) are dropped and its `metadata` kept as
`source_metadata`. Optional `data.max_prompt_chars` keeps each prompt's last N characters (a
dialogue's end, where the next turn goes) and `data.unique` drops repeated prompts.

Outputs in W (the DESIGN.md section 4 pair format, read by `--config.data.files`):
  samples.jsonl          one line per prompt: prompt, responses, scores (the resume point: a
                         rerun samples only prompts not in it yet)
  pairs_<objective>.jsonl  prompt, chosen, rejected, objective, chosen_score, rejected_score,
                         plus the example's other fields (e.g. `answer`) as metadata
  stats.json             prompts, samples, pairs, ties, mean score

`pairs_from_scores` is the pure pair-forming rule; the demo uses it with an RM judge.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import numpy as np

PROMPT_TEMPLATES = {
    "plain": "{prompt}",
    "arithmetic": "{prompt} Answer with the final number.",
    "tutor": ("You are a Socratic programming tutor. Write the tutor's next turn of this "
              "dialogue.\n\n{prompt}"),
}
RM_TRAIN_COMMAND = "python -m mtalign_jax.train --config configs/rm_engagement.py:mini --workdir"


def base_config(arg: str):
    """What every make_pairs config shares: the policy of the variant (tiny: the random tiny
    model; mini: SmolLM2-135M-Instruct), 4 samples a prompt of <= 8 / 48 new tokens at
    temperature 1.0, top-k 50 (the paper's sampling settings), seed 0, an empty `data`."""
    import ml_collections

    if arg not in ("tiny", "mini"):
        raise ValueError(f"unknown variant {arg!r} (tiny, mini)")
    tiny = arg == "tiny"
    c = ml_collections.ConfigDict()
    c.model = "tiny" if tiny else "smollm2-135m-instruct"
    c.dtype = "float32"
    c.samples_per_prompt = 4
    c.max_new_tokens = 8 if tiny else 48
    c.temperature = 1.0
    c.top_k = 50
    c.seed = 0
    c.data = ml_collections.ConfigDict()
    c.data.options = ml_collections.ConfigDict()
    return c


def pairs_from_scores(examples: Sequence[dict], responses: Sequence[Sequence[str]],
                      scores: Sequence[Sequence[float]], *, objective: str,
                      tie_eps: float = 0.0) -> tuple[list[dict], dict]:
    """One best-vs-worst pair per prompt among its non-blank responses; ties (equal scores, or
    fewer than two non-blank responses) dropped and counted.

    examples[i] holds the prompt (`prompt`) and metadata; responses[i] / scores[i] its N
    samples and their scores. Returns (pairs, {"prompts", "pairs", "ties"}); a pair records
    which samples it holds (`chosen_sample`, `rejected_sample`: indices into responses[i]).
    """
    if not len(examples) == len(responses) == len(scores):
        raise ValueError(f"pairs_from_scores: {len(examples)} examples, {len(responses)} "
                         f"response lists and {len(scores)} score lists")
    pairs, ties = [], 0
    for ex, resp, sc in zip(examples, responses, scores):
        sc = np.asarray(sc, np.float64)
        if len(resp) != len(sc) or len(resp) < 2:
            raise ValueError(f"prompt {ex.get('prompt', '')[:40]!r}: need >= 2 responses with "
                             f"one score each, got {len(resp)} and {len(sc)}")
        # An empty (blank) response is never a pair side: the pair format rejects it.
        ok = np.array([bool(r.strip()) for r in resp])
        if ok.sum() < 2:
            ties += 1
            continue
        hi = int(np.argmax(np.where(ok, sc, -np.inf)))
        lo = int(np.argmin(np.where(ok, sc, np.inf)))
        if sc[hi] - sc[lo] <= tie_eps or resp[hi] == resp[lo]:
            ties += 1
            continue
        meta = {k: v for k, v in ex.items() if k not in ("prompt", "chosen", "rejected")}
        pairs.append({**meta, "prompt": ex["prompt"], "chosen": resp[hi], "rejected": resp[lo],
                      "objective": objective, "chosen_score": float(sc[hi]),
                      "rejected_score": float(sc[lo]), "chosen_sample": hi,
                      "rejected_sample": lo})
    return pairs, {"prompts": len(examples), "pairs": len(pairs), "ties": ties}


def exact_int_grader(example: dict, response: str) -> float:
    from mtalign_jax.eval.grading import grade_exact_int

    return float(grade_exact_int(response, int(example["answer"])))


GRADERS: dict[str, Callable[[dict, str], float]] = {"exact_int": exact_int_grader}

# A scorer scores a batch of prompts' samples: (examples, texts [P][N]) -> scores [P][N].
Scorer = Callable[[Sequence[dict], Sequence[Sequence[str]]], list]


def per_item_scorer(grader: Callable[[dict, str], float]) -> Scorer:
    """A scorer that calls `grader(example, response)` on every sample."""
    return lambda examples, texts: [[float(grader(e, t)) for t in ts]
                                    for e, ts in zip(examples, texts)]


def check_rm_path(path: str) -> None:
    """A clear FileNotFoundError unless `path` holds a reward model (our workdir or HF dir)."""
    path = str(path or "")
    found = path and any(os.path.isfile(os.path.join(path, *f)) for f in
                         (("model", "meta.json"), ("meta.json",), ("config.json",)))
    if not found:
        raise FileNotFoundError(
            f"{path or '(config.rm is empty)'}: no reward model there (no model/meta.json); "
            f"train it first with: {RM_TRAIN_COMMAND} {path or 'workdirs/rm_engagement'} "
            f"(or point --config.rm at a reward-model workdir)")


def rm_scorer(path: str, batch_size: int = 16) -> Scorer:
    """Scores (prompt, response) texts with the reward model at `path`, in batches."""
    from mtalign_jax.eval.scoring import load_reward_model, score_texts

    check_rm_path(path)
    rm = load_reward_model(path)

    def score(examples, texts):
        prompts = [e["prompt"] for e, ts in zip(examples, texts) for _ in ts]
        flat = score_texts(rm, prompts, [t for ts in texts for t in ts], batch_size=batch_size)
        out, i = [], 0
        for ts in texts:
            out.append([float(x) for x in flat[i:i + len(ts)]])
            i += len(ts)
        return out

    return score


def make_scorer(config) -> Scorer:
    """The scorer `config.grader` names: "rm" (config.rm) or a per-item grader of GRADERS."""
    if config.grader == "rm":
        return rm_scorer(config.get("rm", ""), int(config.get("rm_batch_size", 16)))
    if config.grader not in GRADERS:
        raise ValueError(f"config.grader={config.grader!r}: known graders: rm, "
                         f"{', '.join(GRADERS)}")
    return per_item_scorer(GRADERS[config.grader])


SOURCE_LABELS = ("chosen", "rejected", "objective")  # a pair source's own labels: not ours


def load_examples(config) -> list[dict]:
    """The prompts to sample, as dicts with `prompt` (templated) and the row's metadata."""
    from mtalign_jax.data.sources import read_source

    c = config.data
    rows = read_source(c.source, **dict(c.options))
    template = PROMPT_TEMPLATES[config.prompt_template]
    max_chars, unique = int(c.get("max_prompt_chars", 0)), bool(c.get("unique", False))
    out, seen = [], set()
    for r in rows:
        if len(out) >= c.num_prompts:
            break
        if unique and r["prompt"] in seen:
            continue
        seen.add(r["prompt"])
        r = {k: v for k, v in r.items() if k not in SOURCE_LABELS}
        if "metadata" in r:
            r["source_metadata"] = r.pop("metadata")
        prompt = r["prompt"][-max_chars:] if max_chars else r["prompt"]
        r["prompt"] = template.format(prompt=prompt)
        out.append(r)
    return out


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(config, workdir: str, grader: Callable[[dict, str], float] | None = None) -> dict:
    """Sample, score, pair (module docstring); resumes from `workdir/samples.jsonl`.

    `grader(example, response) -> float` replaces the config's grader (tests)."""
    import jax
    from tqdm.auto import tqdm

    from mtalign_jax.decoding.sampling import generate
    from mtalign_jax.hf.load import load_pretrained

    os.makedirs(workdir, exist_ok=True)
    examples = load_examples(config)
    samples_path = os.path.join(workdir, "samples.jsonl")
    done = _read_jsonl(samples_path)
    if [d["prompt"] for d in done] != [e["prompt"] for e in examples[:len(done)]]:
        raise ValueError(f"{samples_path}: was written for other prompts; use a new workdir")
    n = int(config.samples_per_prompt)
    todo = examples[len(done):]
    if todo:
        # The scorer first: a missing reward model fails before the policy loads.
        scorer = per_item_scorer(grader) if grader else make_scorer(config)
        model, params, tok = load_pretrained(config.model, dtype=config.dtype)
        per = max(1, int(config.batch_size) // n)
        start = len(done)  # chunk keys depend on the prompt index only: a resumed run samples
        # what an uninterrupted one would
        with open(samples_path, "a") as f, tqdm(total=len(examples), initial=len(done),
                                                 desc="make_pairs: sampling") as bar:
            for i in range(0, len(todo), per):
                chunk = todo[i:i + per]
                ids = [tok.encode_chat([{"role": "user", "content": e["prompt"]}])
                       for e in chunk for _ in range(n)]
                rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), start + i)
                res = generate(model, params, ids, max_new_tokens=config.max_new_tokens,
                               rng=rng, temperature=config.temperature, top_k=config.top_k,
                               tokenizer=tok)
                texts = [[r.text for r in res[j * n:(j + 1) * n]] for j in range(len(chunk))]
                scores = scorer(chunk, texts)
                for e, ts, sc in zip(chunk, texts, scores):
                    row = {"prompt": e["prompt"], "responses": ts, "scores": sc}
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    done.append(row)
                bar.update(len(chunk))
    pairs, stats = pairs_from_scores(examples, [d["responses"] for d in done],
                                     [d["scores"] for d in done], objective=config.objective,
                                     tie_eps=config.tie_eps)
    out = os.path.join(workdir, f"pairs_{config.objective}.jsonl")
    with open(out + ".tmp", "w") as f:
        for p in pairs:
            f.write(json.dumps(p, default=str) + "\n")
    os.replace(out + ".tmp", out)
    stats.update(samples=len(done) * n,
                 mean_score=float(np.mean([s for d in done for s in d["scores"]])),
                 pairs_file=out)
    with open(os.path.join(workdir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(f"make_pairs: {stats['pairs']} pairs from {stats['prompts']} prompts "
          f"({stats['ties']} ties dropped) -> {out}")
    return stats


def main():
    import sys

    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "make_pairs config[:variant].")
    workdir = flags.DEFINE_string("workdir", None, "Output directory (resumable).")
    flags.mark_flags_as_required(["config", "workdir"])
    sys.exit(app.run(lambda argv: run(config.value, workdir.value) and None))


if __name__ == "__main__":
    main()
