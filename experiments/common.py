"""Shared harness of the experiment scripts (one script per paper table / ablation, PAPER.md §6).

Every script parses the same flags (`parse_args`):
  --scale {smoke,mini,paper}  smoke: the `tiny` preset on SYNTHETIC pairs, 1 seed, 2 steps (the
                              test suite's mode); mini (default): SmolLM2-135M-Instruct `mini`
                              configs on the demo's pair files, few steps, top layers only;
                              paper: the configs' `paper` variants (7B/8B, PAPER.md §7).
  --seeds N or a,b,c          seeds (default 3; smoke 1); every number is the mean over seeds
                              with a t-based 95% interval.
  --out DIR                   where the table goes (default experiments_out/<name>/):
                              <name>.md, <name>.csv (long format: row, metric, mean, ci95, n)
                              and <name>.png (bars with the intervals).
  --runs DIR                  the run cache shared by all scripts (default
                              experiments_out/runs/<scale>): a training run is keyed by its config
                              and overrides, so a run one script trained (e.g. MAH-DPO seed 0) is
                              reused by the others instead of trained again.
  --data obj:PATH,...         preference pair files (default at mini: demo_out/pairs_*.jsonl).
  --steps N                   training steps per run (default: the scale's).

Training goes through the same code path as `python -m mtalign_jax.train` (`train`: the config
file's get_config(variant), `--config.x=y`-style overrides, then `training.loop.run`).
Evaluation (`pref_accuracy`, `decode_eval`) is offline: the held-out preference accuracy of a
model's implicit reward, beta-free: the fraction of held-out pairs with
(log pi(chosen) - log pi_ref(chosen)) > (log pi(rejected) - log pi_ref(rejected)) (ties count
one half, so the reference itself scores 0.5), at any head weights; and for generations, exact
grading (accuracy) and a judge reward model kept apart from every guide (engagement).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import os
import zlib
from typing import Callable, Optional, Sequence

import numpy as np

from mtalign_jax.data.synthetic import write_jsonl  # also the scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
OBJECTIVES = ("accuracy", "engagement")


@dataclasses.dataclass(frozen=True)
class Scale:
    """What a scale runs: the config variant and the budget knobs of the experiments."""

    name: str
    variant: str  # configs/*.py variant
    seeds: int
    steps: int  # training steps per run (0 = the config's own)
    synthetic_pairs: int  # smoke: SYNTHETIC pairs per objective
    eval_pairs: int  # held-out pairs per objective scored (cap)
    decode_prompts: int  # prompts per objective for generation metrics
    max_new_tokens: int
    step_tokens: int  # guided decoding: per-step token cap
    candidates: int  # guided decoding / best-of-N: K
    rm_steps: int  # guide / judge reward-model training steps
    overrides: tuple = ()  # extra overrides of every preference run


SCALES = {
    # smoke: the loop's own eval is off (its compile is the cost; the tables use common.Scorer)
    "smoke": Scale("smoke", "tiny", 1, 2, 24, 8, 2, 8, 4, 2, 2,
                   (("checkpoint_every", 2), ("eval_every", 0), ("mesh.devices", 1))),
    # mini: 16 steps of 4 pairs, top 2 of 30 layers + heads train (about 5-8 s a step on 2
    # cores), held-out scores on 96 pairs per objective; generations: 16 prompts per objective.
    "mini": Scale("mini", "mini", 3, 16, 0, 96, 16, 32, 12, 4, 100,
                  (("checkpoint_every", 16), ("eval_every", 16), ("eval_batches", 2),
                   ("optim.train_top_layers", 2), ("optim.warmup_steps", 4),
                   ("data.batch_size", 4))),
    "paper": Scale("paper", "paper", 3, 0, 0, 256, 500, 1024, 256, 5, 0, ()),
}


# ---------------------------------------------------------------------------------------------
# flags


def parse_args(name: str, doc: str, argv: Optional[Sequence[str]] = None,
               add: Optional[Callable[[argparse.ArgumentParser], None]] = None):
    """The shared flags (module docstring) plus the script's own (`add(parser)`)."""
    ap = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="mini")
    ap.add_argument("--seeds", default="", help="N (seeds 0..N-1) or a comma list")
    ap.add_argument("--out", default="", help=f"default experiments_out/{name}/")
    ap.add_argument("--runs", default="", help="shared run cache (default "
                                               "experiments_out/runs/<scale>)")
    ap.add_argument("--data", default="", help="objective:PATH,... preference pair files")
    ap.add_argument("--steps", type=int, default=0, help="training steps per run")
    if add is not None:
        add(ap)
    a = ap.parse_args(list(argv) if argv is not None else None)
    a.name = name
    a.scale_cfg = SCALES[a.scale]
    if a.steps:
        a.scale_cfg = dataclasses.replace(a.scale_cfg, steps=a.steps)
    a.seed_list = parse_seeds(a.seeds, a.scale_cfg.seeds)
    a.out = a.out or os.path.join("experiments_out", name)
    a.runs = a.runs or os.path.join("experiments_out", "runs", a.scale)
    return a


def parse_seeds(spec: str, default: int) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5' -> [0, 5]; '' -> range(default)."""
    spec = str(spec).strip()
    try:
        if not spec:
            return list(range(default))
        if "," in spec:
            return [int(s) for s in spec.split(",") if s.strip()]
        n = int(spec)
    except ValueError:
        raise ValueError(f"--seeds {spec!r}: expected a count or a comma list of ints") from None
    if n < 1:
        raise ValueError(f"--seeds {spec!r}: need at least one seed")
    return list(range(n))


@contextlib.contextmanager
def compile_cache(path: str):
    """JAX's persistent compilation cache in `path` while the experiment runs (runs of the same
    shapes and constants, e.g. other seeds, then skip compilation); the previous setting is put
    back afterwards. Kept as it is when the user already set a cache directory."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir:
        yield
        return
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        cc.reset_cache()


def run_script(name: str, doc: str, argv, body: Callable, add=None) -> dict:
    """parse_args, then body(args) under the compilation cache of the run directory."""
    args = parse_args(name, doc, argv, add)
    with compile_cache(os.path.join(args.runs, "jax_cache")):
        return body(args)


# ---------------------------------------------------------------------------------------------
# data


def parse_data(spec: str) -> dict[str, str]:
    """'accuracy:A.jsonl,engagement:B.jsonl' -> {objective: path} (paths must exist)."""
    out = {}
    for item in filter(None, (s.strip() for s in str(spec).split(","))):
        obj, sep, path = item.partition(":")
        if not sep or not obj or not path:
            raise ValueError(f"--data: expected objective:PATH, got {item!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--data: {path} (objective {obj!r}) does not exist")
        out[obj] = path
    return out


def synthetic_rows(objectives: Sequence[str], n: int, conflict: bool = False) -> dict:
    """{objective: SYNTHETIC pairs} (data/synthetic.py) with the sum as `answer` metadata."""
    import re

    from mtalign_jax.data.synthetic import synthetic_preferences

    out: dict[str, list] = {o: [] for o in objectives}
    for r in synthetic_preferences(list(objectives), n, seed=0, conflict=conflict):
        a, b = (int(x) for x in re.findall(r"\d+", r["prompt"])[:2])
        out[r["objective"]].append(dict(r, answer=a + b))
    return out


def pair_files(args, objectives: Sequence[str] = OBJECTIVES) -> dict[str, str]:
    """{objective: pair file} for the run: --data, else SYNTHETIC files (smoke), else the
    demo's `demo_out/pairs_<objective>.jsonl` (mini); a clear error when they are missing."""
    given = parse_data(args.data)
    if given:
        missing = [o for o in objectives if o not in given]
        if missing:
            raise ValueError(f"--data names no file for objective(s) {', '.join(missing)} "
                             f"(needed: {', '.join(objectives)})")
        return {o: given[o] for o in objectives}
    if args.scale == "smoke":
        rows = synthetic_rows(objectives, args.scale_cfg.synthetic_pairs)
        d = os.path.join(args.runs, "data")
        return {o: write_jsonl(rows[o], os.path.join(d, f"synthetic_{o}.jsonl"))
                for o in objectives}
    files = {o: os.path.join("demo_out", f"pairs_{o}.jsonl") for o in objectives}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found: run `make demo` first (it writes the mini-scale "
            f"pair files) or pass --data {','.join(o + ':PATH' for o in objectives)}")
    return files


def split_rows(path: str, objective: str, config) -> tuple[list, list]:
    """(train, held-out) rows of one pair file: the very split the training run uses."""
    from mtalign_jax.data import pipeline, validate

    rows = list(validate.load_preference_file(path, objective))
    c = config.data
    return pipeline.split_train_eval(rows, eval_frac=c.eval_frac, seed=c.split_seed,
                                     eval_cap=c.eval_cap, source_cap=c.source_cap)


def heldout_rows(path: str, objective: str, config) -> list:
    """The rows a table scores for one pair file. A demo pair file `DIR/pairs_<o>.jsonl` with a
    sibling `DIR/heldout_<o>.jsonl` (what `make demo` writes: its own 200 held-out pairs per
    objective, from prompts and conversations no training pair uses) is scored on the sibling;
    any other file on its own held-out split (`split_rows`; 10% of the file: a handful of pairs
    for the demo's ~40-100-pair files, which is why the demo writes the siblings)."""
    from mtalign_jax.data import validate

    sibling = heldout_sibling(path, objective)
    if sibling:
        return list(validate.load_preference_file(sibling, objective))
    return split_rows(path, objective, config)[1]


def heldout_sibling(path: str, objective: str) -> str:
    """`DIR/heldout_<o>.jsonl` when path is a demo pair file `DIR/pairs_<o>.jsonl` that has one
    beside it, else ""."""
    d, name = os.path.split(path)
    sibling = os.path.join(d, f"heldout_{objective}.jsonl")
    return sibling if name == f"pairs_{objective}.jsonl" and os.path.isfile(sibling) else ""


def files_spec(files: dict[str, str]) -> str:
    return ",".join(f"{o}:{p}" for o, p in files.items())


# ---------------------------------------------------------------------------------------------
# training (the `python -m mtalign_jax.train` code path, in-process)


def load_config(name: str, variant: str, overrides: Optional[dict] = None):
    """configs/<name>.py get_config(variant), with dotted-key overrides applied."""
    path = os.path.join(CONFIGS, f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path}")
    spec = importlib.util.spec_from_file_location(f"_experiment_config_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config(variant)
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"config {name}:{variant} has no key {key!r}")
        node[leaf] = value
    return cfg


@dataclasses.dataclass
class Run:
    workdir: str
    metrics: dict  # the final step's training + eval metrics (metrics.jsonl)


def final_metrics(workdir: str) -> dict:
    """Merged records of the last step in workdir/metrics.jsonl."""
    recs = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    if not recs:
        return {}
    last = max(r["step"] for r in recs)
    out: dict = {}
    for r in recs:
        if r["step"] == last:
            out.update(r)
    return out


def _data_digest(files_spec: str) -> str:
    """sha256 of the contents of the files a `data.files` spec names ("" for none): a run
    cache key that changes when a data file is rewritten under the same path."""
    h = hashlib.sha256()
    for spec in filter(None, (x.strip() for x in str(files_spec).split(","))):
        path = spec if os.path.exists(spec) else spec.split(":", 1)[-1]
        if os.path.isfile(path):
            st = os.stat(path)
            h.update(_file_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return h.hexdigest() if files_spec else ""


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file, read once per (path, size, mtime): every run of a script names the
    same data files, and paper-scale files are large."""
    del size, mtime_ns  # part of the cache key only
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def train(config_name: str, variant: str, overrides: dict, runs_dir: str, tag: str) -> Run:
    """Train configs/<config_name>.py:<variant> with overrides in runs_dir/<tag>-<hash>.

    A run already finished there (same config, same overrides, same data file contents) is
    reused; an unfinished one resumes from its checkpoint (training/loop.py). Returns the run's
    final metrics.
    """
    from mtalign_jax.training import loop

    key = json.dumps([config_name, variant, sorted(overrides.items()),
                      _data_digest(overrides.get("data.files", ""))], default=str)
    workdir = os.path.join(runs_dir, f"{tag}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")
    done = os.path.join(workdir, "finished.json")
    if os.path.isfile(done):
        with open(done) as f:
            if json.load(f).get("key") == key:
                return Run(workdir, final_metrics(workdir))
    cfg = load_config(config_name, variant, overrides)
    print(f"[experiments] train {config_name}:{variant} -> {workdir}", flush=True)
    loop.run(cfg, workdir)
    with open(done, "w") as f:
        json.dump({"key": key}, f)
    return Run(workdir, final_metrics(workdir))


def preference_overrides(args, files: dict[str, str], seed: int, **extra) -> dict:
    """Overrides of a preference run at this scale: data files, objectives, seed, steps."""
    sc = args.scale_cfg
    ov = {"data.files": files_spec(files), "data.objectives": ",".join(files), "seed": seed}
    if sc.steps:
        ov["total_steps"] = sc.steps
    if args.scale == "smoke":
        ov["data.synthetic"] = 0
    ov.update(dict(sc.overrides))
    ov.update(extra)
    return ov


# ---------------------------------------------------------------------------------------------
# held-out preference accuracy


def pref_accuracy(logps: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[G] fraction of pairs the implicit reward orders right; ties count 1/2.

    logps [G, N, 2] (chosen, rejected) under G head weights; ref [N, 2] under the reference.
    """
    d = (logps[..., 0] - ref[None, :, 0]) - (logps[..., 1] - ref[None, :, 1])
    return ((d > 0) + 0.5 * (d == 0)).mean(axis=1)


class Scorer:
    """Held-out preference accuracy of trained models, with reference log-probs computed once.

    rows: {objective: held-out rows}; reference: the runs' reference model (name, head seed).
    """

    def __init__(self, rows: dict, reference: str, head_seed: int, max_len: int,
                 max_prompt_len: int, batch_size: int = 8):
        from mtalign_jax.hf.load import load_pretrained
        from mtalign_jax.sweep import score_pairs

        self.rows = rows
        self.enc = dict(max_len=max_len, max_prompt_len=max_prompt_len, batch_size=batch_size)
        model, params, self.tok = load_pretrained(reference, num_heads=1, seed=head_seed)
        self.ref = {o: score_pairs(model, params, self.tok, r, [[1.0]], **self.enc)[0]
                    for o, r in rows.items()}

    @classmethod
    def for_config(cls, config, rows: dict, cap: int):
        return cls({o: r[:cap] for o, r in rows.items()},
                   config.model.get("reference", "") or config.model.name,
                   config.model.head_seed, config.data.max_len, config.data.max_prompt_len)

    def __call__(self, model_dir: str, weights: Sequence[Sequence[float]] = ((1.0,),)
                 ) -> dict[str, np.ndarray]:
        """{objective: [G] accuracy} of the model at each head-weight vector."""
        from mtalign_jax.hf.load import load_pretrained
        from mtalign_jax.sweep import score_pairs

        model, params, _ = load_pretrained(model_dir)
        w = np.asarray(weights, np.float32)
        if w.shape[1] != model.num_heads:
            raise ValueError(f"{model_dir}: {model.num_heads} heads but weights {w.tolist()}")
        return {o: pref_accuracy(score_pairs(model, params, self.tok, r, w, **self.enc),
                                 self.ref[o]) for o, r in self.rows.items()}


def one_hot(k: int, i: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(k)]


def add_head_rows(res, score, workdir: str, heads, label: str) -> None:
    """Rows `label (ensemble)` (uniform head weights) and `label (head h)` (each head alone)
    of a multi-head workdir: `score(workdir, weights)` -> {objective: [acc per weight]}."""
    k = len(heads)
    acc = score(workdir, [uniform(k)] + [one_hot(k, i) for i in range(k)])
    res.add_all(f"{label} (ensemble)", {o: a[0] for o, a in acc.items()})
    for i, h in enumerate(heads):
        res.add_all(f"{label} (head {h})", {o: a[1 + i] for o, a in acc.items()})


def uniform(k: int) -> list[float]:
    return [1.0 / k] * k


# ---------------------------------------------------------------------------------------------
# reward models (guides and judge) and generation metrics


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def halves(rows: Sequence[dict]) -> tuple[list, list]:
    """Two disjoint halves of rows, split by prompt (a prompt's pairs stay together)."""
    a, b = [], []
    for r in rows:
        (a if zlib.crc32(_prompt_key(r["prompt"]).encode()) % 2 == 0 else b).append(r)
    if not a or not b:  # tiny inputs: fall back to alternating rows
        a, b = list(rows[0::2]), list(rows[1::2])
    return a, b


def train_reward_model(args, rows: Sequence[dict], tag: str, seed: int = 0) -> str:
    """A Bradley-Terry RM (configs/rm_engagement.py at this scale's variant) on `rows`; returns
    its workdir. Used as a guide or a judge (never both)."""
    path = write_jsonl([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows],
                       os.path.join(args.runs, "data", f"rm_{tag}.jsonl"))
    ov = {"data.files": path, "data.source": "", "seed": seed}
    if args.scale_cfg.rm_steps:
        ov.update({"total_steps": args.scale_cfg.rm_steps,
                   "checkpoint_every": args.scale_cfg.rm_steps,
                   "eval_every": args.scale_cfg.rm_steps})
    if args.scale == "smoke":
        ov["data.synthetic"] = 0
    return train("rm_engagement", args.scale_cfg.variant, ov, args.runs, f"rm_{tag}").workdir


@dataclasses.dataclass
class GenSetup:
    """Everything the generation metrics need: held-out prompts and the three RMs."""

    acc_prompts: list  # [(prompt, answer)]
    eng_prompts: list  # [prompt]
    guides: dict  # {"accuracy": rm workdir, "engagement": rm workdir}
    judge: str  # engagement judge workdir (trained on data the guide never saw)


def gen_setup(args, files: dict[str, str], acc_guide: str = "", eng_guide: str = "") -> GenSetup:
    """Held-out prompts and the RMs: the accuracy guide on the accuracy training pairs, the
    engagement guide and judge on two disjoint halves of the engagement training pairs
    (split by prompt). `acc_guide` / `eng_guide` replace a guide by a PRM/RM workdir."""
    cfg = load_config("mahdpo_math", args.scale_cfg.variant,
                      {"data.files": files_spec(files)})
    acc_train, acc_held = split_rows(files["accuracy"], "accuracy", cfg)
    eng_train, eng_held = split_rows(files["engagement"], "engagement", cfg)
    n = args.scale_cfg.decode_prompts
    seen, acc_prompts = set(), []
    for r in acc_held:
        ans = r.get("answer")
        if ans is not None and _prompt_key(r["prompt"]) not in seen and len(acc_prompts) < n:
            seen.add(_prompt_key(r["prompt"]))
            acc_prompts.append((r["prompt"], ans))
    if not acc_prompts:
        raise ValueError(f"{files['accuracy']}: no held-out pair carries an 'answer' field, so "
                         f"generated answers cannot be graded (the demo's pairs_accuracy.jsonl "
                         f"has it)")
    eng_prompts = list(dict.fromkeys(_prompt_key(r["prompt"]) for r in eng_held))[:n]
    half_a, half_b = halves(eng_train)
    guides = {"accuracy": acc_guide or train_reward_model(args, acc_train, "acc_guide"),
              "engagement": eng_guide or train_reward_model(args, half_a, "eng_guide")}
    return GenSetup(acc_prompts, eng_prompts, guides,
                    train_reward_model(args, half_b, "eng_judge"))


@functools.lru_cache(maxsize=8)
def _rm(path: str):
    """A reward model by path; the last few stay loaded (guides and the judge are reused)."""
    from mtalign_jax.eval.scoring import load_reward_model

    return load_reward_model(path)


@functools.lru_cache(maxsize=2)
def _policy(name: str):
    """A policy by name or workdir; only the last two stay in memory (a script walks through
    one policy per method and seed, each a full model)."""
    from mtalign_jax.hf.load import load_pretrained

    return load_pretrained(name, seed=42)


def decode_eval(args, setup: GenSetup, policy: str, *, method: str = "sample",
                guide: Sequence[tuple[str, float]] = (), head_weights=None,
                seed: int = 0) -> dict[str, float]:
    """{"accuracy", "engagement"} of one decoding method over the held-out prompts.

    method: "sample" (T 1.0, top-k 50), "best_of_n" (K whole responses reranked by the guide)
    or "guided" (steps chosen by the guide, continuing KV cache). guide: [(objective,
    weight)] of the setup's guides (combined by weight). accuracy: exact grading on the
    arithmetic prompts (math steps); engagement: the judge's sigmoid(score) on the
    conversation prefixes (sentence steps).
    """
    import jax

    from mtalign_jax.decoding import guided
    from mtalign_jax.eval import judges
    from mtalign_jax.evaluate import grade, judge_metric

    sc = args.scale_cfg
    model, params, tok = _policy(policy)
    g = None
    if method != "sample":
        gs = [guided.RewardGuide(_rm(setup.guides[o])) for o, _ in guide]
        g = guided.CombinedGuide(gs, [w for _, w in guide])
        judges.check_roles([judges.Judge(_rm(setup.judge), "engagement", role="judge")]
                           + [judges.Judge(x.rm, o, role="guide")
                              for x, (o, _) in zip(gs, guide)])
    out = {}
    for objective, prompts, domain in (
            ("accuracy", [p for p, _ in setup.acc_prompts], "math"),
            ("engagement", setup.eng_prompts, "dialogue")):
        ids = [tok.encode_chat([{"role": "user", "content": p}]) for p in prompts]
        rng = jax.random.PRNGKey(1000 * seed + (objective == "engagement"))
        if method == "sample":
            res = guided.sample_plain(model, params, tok, ids, max_new_tokens=sc.max_new_tokens,
                                      rng=rng, head_weights=head_weights)
        else:
            dom = guided.get_domain("turn" if method == "best_of_n" else domain,
                                    max_new_tokens=sc.max_new_tokens,
                                    max_step_tokens=(sc.max_new_tokens if method == "best_of_n"
                                                     else sc.step_tokens))
            res = guided.guided_generate(model, params, tok, ids, guide=g, guide_prompts=prompts,
                                         num_candidates=sc.candidates, domain=dom, rng=rng,
                                         head_weights=head_weights)
        texts = [r.text for r in res]
        if objective == "accuracy":
            out["accuracy"] = float(np.mean([bool(grade("int", t, a)) for t, (_, a)
                                             in zip(texts, setup.acc_prompts)]))
        else:
            from mtalign_jax.eval.scoring import score_texts

            judge = _rm(setup.judge)
            s = score_texts(judge, prompts, texts)
            out["engagement"] = float(np.mean([judge_metric(judge, float(x)) for x in s]))
    return out


# ---------------------------------------------------------------------------------------------
# statistics and outputs


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-based interval); one value: (value, 0.0), no interval."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("mean_ci of no values")
    if x.size == 1:
        return float(x[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


class Results:
    """Per-seed numbers: add(row, metric, value); summary() -> [(row, metric, mean, ci, n)]."""

    def __init__(self):
        self.values: dict[tuple[str, str], list[float]] = {}

    def add(self, row: str, metric: str, value: float) -> None:
        self.values.setdefault((row, metric), []).append(float(value))

    def add_all(self, row: str, metrics: dict) -> None:
        for k, v in metrics.items():
            self.add(row, k, v)

    def rows(self) -> list[str]:
        return list(dict.fromkeys(r for r, _ in self.values))

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(m for _, m in self.values))

    def summary(self) -> list[tuple[str, str, float, float, int]]:
        return [(r, m, *mean_ci(v), len(v)) for (r, m), v in self.values.items()]


def write_outputs(args, results: Results, *, title: str, notes: str = "",
                  paper: str = "") -> dict[str, str]:
    """<out>/<name>.{md,csv,png}: the wide markdown table (mean ± 95% interval), the long
    CSV (row, metric, mean, ci95, n) and a bar plot with the intervals."""
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)
    summ = results.summary()
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "metric", "mean", "ci95", "n"])
        for r, m, mean, ci, n in summ:
            w.writerow([r, m, f"{mean:.6g}", f"{ci:.6g}", n])
    cell = {(r, m): (mean, ci, n) for r, m, mean, ci, n in summ}
    rows, metrics = results.rows(), results.metrics()
    seeds = ",".join(map(str, args.seed_list))
    lines = [f"# {title}", "",
             f"Scale `{args.scale}`, seeds {seeds} (mean ± t-based 95% interval over seeds; "
             f"one seed: no interval).", "",
             "| row | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for r in rows:
        vals = []
        for m in metrics:
            if (r, m) not in cell:
                vals.append("-")
                continue
            mean, ci, n = cell[(r, m)]
            vals.append(f"{mean:.3f} ± {ci:.3f}" if n > 1 else f"{mean:.3f}")
        lines.append(f"| {r} | " + " | ".join(vals) + " |")
    if notes:
        lines += ["", notes.strip()]
    if paper:
        lines += ["", "Paper's numbers for comparison (PAPER.md §6):", "", paper.strip()]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(base + ".png", rows, metrics, cell, title)
    return {"md": base + ".md", "csv": base + ".csv", "png": base + ".png"}


def _plot(path, rows, metrics, cell, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(rows) * max(len(metrics), 1) / 2), 4.8),
                           dpi=110)
    width = 0.8 / max(len(metrics), 1)
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        means = [cell.get((r, m), (np.nan, 0, 0))[0] for r in rows]
        errs = [cell.get((r, m), (0, 0, 0))[1] for r in rows]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=errs, capsize=3,
               label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
