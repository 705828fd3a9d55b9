"""Defaults shared by every training config (configs/*.py build on `base_config`).

Keys every training config has: total_steps, checkpoint_every, log_every, eval_every, seed.

Default data of the `mini` preference configs (used only while `data.files` is empty):
- `data.default_files`: a files spec filtered to `data.objectives` when the data is loaded (so an
  override of `data.objectives`, e.g. dpo_single with engagement, picks that objective's file).
  Math: the real pair files `make demo` writes (`DEMO_FILES`, mtalign_jax/demo/stages.py
  stage_pairs); tutor: `accuracy:source:socratic_mind,engagement:workdirs/.../
  pairs_engagement.jsonl`.
  A missing file is a clear error naming `data.default_files_help`, the command that makes it
  (training/task_preference.py).
- `data.source` (+ `data.source_path`, the source's file): every pair of a built-in pair source
  (e.g. `ultrafeedback`, one objective per dimension), grouped by each row's objective.
A files entry `OBJECTIVE:source:NAME` reads that objective's pairs from the built-in source NAME
(mtalign_jax/data/sources) instead of a file.
"""
from __future__ import annotations

import os

import ml_collections

# The pair files `make demo` writes (python -m mtalign_jax.demo --workdir demo_out).
DEMO_FILES = "accuracy:demo_out/pairs_accuracy.jsonl,engagement:demo_out/pairs_engagement.jsonl"


def base_config(task: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.total_steps = 10
    c.checkpoint_every = 5
    c.keep_checkpoints = 2
    c.log_every = 1
    c.eval_every = 5
    c.eval_batches = 2
    c.nan_policy = "skip"  # "skip": skip the update and count it; "stop": raise
    c.debug_nan_step = 0  # fault injection for tests: NaN into that step's float batch inputs

    c.model = ml_collections.ConfigDict()
    c.model.name = "tiny"  # preset, HF dir, .gguf file or workdir
    c.model.dtype = "float32"
    c.model.remat = False
    c.model.num_heads = 1
    c.model.head_init_noise = 0.0
    c.model.head_seed = 42

    c.data = ml_collections.ConfigDict()
    c.data.files = ""  # "PATH" (sft) or "objective:PATH,objective:PATH" (preferences)
    c.data.source = ""  # a built-in offline source (e.g. "gsm8k") used when files is empty
    c.data.objectives = ""  # comma-separated objective names, in head order
    c.data.synthetic = 64  # tiny variants: rows of clearly-labelled synthetic data when no files
    c.data.max_len = 128
    c.data.max_prompt_len = 64
    c.data.buckets = (32, 64, 128, 256, 512, 1024, 2048)
    c.data.batch_size = 8  # examples (sft) or pairs (preferences) per step, global
    c.data.eval_frac = 0.1
    c.data.eval_cap = 256
    c.data.source_cap = 200_000
    c.data.split_seed = 42
    c.data.skip_bad_rows = False

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "rmsprop"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.rmsprop_decay = 0.99
    c.optim.clip_norm = 10.0
    c.optim.grad_accum = 1
    c.optim.freeze = ()
    c.optim.train_top_layers = 0
    c.optim.heads_only_warmup_steps = 0  # N > 0: the first N updates train the heads only
    c.optim.total_steps = c.get_ref("total_steps")
    c.optim.nan_policy = c.get_ref("nan_policy")

    c.mesh = ml_collections.ConfigDict()
    c.mesh.axes = ("data", "fsdp", "tensor")
    c.mesh.shape = (-1, 1, 1)
    c.mesh.devices = 0  # use the first N devices (0 = all)
    c.mesh.rules = "default"
    return c


def resolve_pair_files(data) -> tuple[str, bool]:
    """(files spec, defaulted): `data.files`, or when it is empty and `data.default_files` is
    set, its entries of `data.objectives` (defaulted=True); else ("", False)."""
    if data.files:
        return str(data.files), False
    objectives = [o.strip() for o in str(data.objectives).split(",") if o.strip()]
    default = str(data.get("default_files", ""))
    if default and objectives:
        entries = [e.strip() for e in default.split(",") if e.strip()]
        keep = [e for e in entries if e.split(":", 1)[0] in objectives]
        return ",".join(keep), bool(keep)
    return "", False


# Paper hyperparameters per domain (PAPER.md section 7.1).
PAPER_PREFERENCE = {
    "math": dict(model="qwen2.5-7b-instruct", lr=1e-6, batch=32, max_prompt=512, max_len=1536,
                 noise=1e-3),
    "hv": dict(model="llama-3.1-8b-instruct", lr=5e-7, batch=30, max_prompt=256, max_len=768,
               noise=1e-3),
    "tutor": dict(model="qwen2.5-7b-instruct", lr=5e-6, batch=64, max_prompt=1336,
                  max_len=1536, noise=1e-3),
}


def preference_config(task: str, objectives: str, variant: str, domain: str = "math"):
    """MAH-DPO / DPO defaults: beta 0.1, RMSprop (alpha 0.99), warmup 150 then constant, clip 10,
    reference log-probs precomputed once, heads = base head + 1e-3 noise (seed 42)."""
    c = base_config(task)
    c.data.objectives = objectives
    c.data.balanced = True
    c.data.conflict = False
    c.data.default_files = ""  # mini defaults: "objective:PATH|source:NAME,..."
    c.data.default_files_help = ""  # the command(s) that write a missing default file
    c.data.source_path = ""  # with data.source: the source's file ("" = its offline location)
    k = len(objectives.split(","))
    c.model.num_heads = k if task == "mahdpo" else 1
    c.model.head_init_noise = 1e-3
    c.model.head_seed = 42
    c.model.reference = ""  # the SFT model; "" = the base model itself (one unperturbed head)
    c.loss = ml_collections.ConfigDict()
    c.loss.beta = 0.1
    c.loss.label_smoothing = 0.0
    c.loss.ipo = False
    c.loss.reference_free = False
    c.loss.reference = "precomputed"  # or "live"
    c.loss.objective_weights = ()  # per-objective weights of the trunk loss; () = equal
    c.optim.name = "rmsprop"
    c.optim.clip_norm = 10.0
    if variant == "tiny":
        c.model.name = "tiny"
        c.model.head_init_noise = 0.02  # the tiny model's random head is ~N(0, 0.02)
        c.total_steps = 20
        c.checkpoint_every = 10
        c.eval_every = 10
        c.data.synthetic = 96
        c.data.batch_size = 2 * k
        c.data.max_len = 96
        c.data.max_prompt_len = 48
        c.optim.lr = 1e-3
        c.loss.beta = 0.5
    elif variant == "mini":
        c.model.name = "smollm2-135m-instruct"
        c.total_steps = 60
        c.checkpoint_every = 30
        c.eval_every = 30
        c.data.synthetic = 0  # real files: --config.data.files=obj:PATH,... (make_pairs / demo)
        if domain == "math":  # default: the pair files `make demo` writes
            c.data.default_files, c.data.default_files_help = DEMO_FILES, "`make demo`"
        c.data.batch_size = 2 * k
        c.data.max_len = 192
        c.data.max_prompt_len = 96
        c.optim.lr = 5e-6
        c.optim.warmup_steps = 10
    elif variant == "paper":
        p = PAPER_PREFERENCE[domain]
        c.model.name = p["model"]
        c.model.dtype = "bfloat16"
        c.model.remat = True
        c.model.head_init_noise = p["noise"]
        c.data.synthetic = 0
        c.data.batch_size = p["batch"] - p["batch"] % k
        c.data.max_len = p["max_len"]
        c.data.max_prompt_len = p["max_prompt"]
        c.optim.lr = p["lr"]
        c.optim.warmup_steps = 150
        c.optim.grad_accum = 4
        c.total_steps = 10_000
        c.checkpoint_every = 500
        c.eval_every = 5000
        c.mesh.shape = (1, -1, 1)
    else:
        raise ValueError(f"unknown variant {variant!r}: tiny, mini, paper")
    return c
