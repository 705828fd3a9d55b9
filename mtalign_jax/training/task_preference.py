"""Preference tasks: MAH-DPO (task "mahdpo") and single-head DPO baselines (task "dpo").

MAH-DPO: objective k's pairs train head k; the trunk gets the (weighted) mean over the
objectives present. DPO baselines use one head: `dpo_single` (one objective) and `dpo_mixed`
(the pooled data of all objectives) differ only in their data.

Reference log-probs come from the frozen reference model (the SFT model; by default the
config's base model with one unperturbed head), either live every step
(`loss.reference="live"`) or precomputed once into `workdir/reference_logps.npz`
(`loss.reference="precomputed"`, the default; never written beside the input data).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

import jax
import numpy as np
from tqdm.auto import tqdm

from mtalign_jax.training import tasks
from mtalign_jax.training.steps import make_preference_step, response_logps

REFERENCE_FILE = "reference_logps.npz"


def load_preference_data(config) -> dict:
    """{"objectives", "train": {obj: rows}, "eval": {obj: rows}}; every named file validated.

    Files: `data.files`, or for the `mini` configs their `data.default_files` (the demo's pair
    files for math, config_base.resolve_pair_files); a missing
    default file is a clear error. A files entry `OBJECTIVE:source:NAME` reads that objective's
    pairs from the built-in source NAME. With no files, `data.source` (at `data.source_path`)
    gives every objective's pairs (e.g. ultrafeedback's dimensions)."""
    from mtalign_jax.data import pipeline, synthetic, validate
    from mtalign_jax.training.config_base import resolve_pair_files

    c = config.data
    objectives = tasks._objectives(config)
    if not objectives:
        raise ValueError("config.data.objectives is empty: name the objectives in head order, "
                         "e.g. --config.data.objectives=accuracy,engagement")
    files, defaulted = resolve_pair_files(c)
    if defaulted:
        _check_default_files(files, objectives, c.get("default_files_help", ""))
    by_obj: dict[str, list] = {o: [] for o in objectives}
    if files:
        if any(p.startswith(SOURCE_PREFIX) for _, p in validate.parse_files_spec(files)):
            data = _files_and_sources(files, objectives, c.skip_bad_rows)
        else:
            data, _ = validate.validate_files(files, "mahdpo", objectives, c.skip_bad_rows)
        for o in objectives:
            by_obj[o].extend(data.get(o, []))
        missing = [o for o in objectives if not by_obj[o]]
        if missing:
            raise ValueError(f"no preference data for objective(s) {', '.join(missing)}: the "
                             f"files must name every objective of the config "
                             f"({', '.join(objectives)})")
    elif c.get("source", ""):
        for r in _source_pairs(c.source, c.get("source_path", "") or None):
            if r["objective"] in by_obj:
                by_obj[r["objective"]].append(r)
        missing = [o for o in objectives if not by_obj[o]]
        if missing:
            raise ValueError(f"data.source={c.source!r} has no pairs for objective(s) "
                             f"{', '.join(missing)} (the config's objectives: "
                             f"{', '.join(objectives)})")
    elif c.synthetic:
        rows = synthetic.synthetic_preferences(objectives, c.synthetic, seed=config.seed,
                                               conflict=bool(c.get("conflict", False)))
        for r in rows:  # SYNTHETIC data, labelled as such in every row
            by_obj[r["objective"]].append(r)
    else:
        raise ValueError("no preference data: --config.data.files=objective:PATH,...")
    train, held = {}, {}
    for o in objectives:
        train[o], held[o] = pipeline.split_train_eval(
            by_obj[o], eval_frac=c.eval_frac, seed=c.split_seed, eval_cap=c.eval_cap,
            source_cap=c.source_cap)
    return {"objectives": objectives, "train": train, "eval": held}


def _check_default_files(files: str, objectives, help_: str = "") -> None:
    """The default pair files must exist (FileNotFoundError naming the first missing and
    `help_`, the command that makes them)."""
    from mtalign_jax.data import validate

    for _, path in validate.parse_files_spec(files):
        if path.startswith(SOURCE_PREFIX) or os.path.isfile(path):
            continue
        example = ",".join(f"{o}:PATH" for o in objectives)
        raise FileNotFoundError(
            f"{path}: no such file ({os.path.abspath(path)}); data.files is empty, so this "
            f"config trains on its default pair files ({files}): run {help_ or 'what makes them'} "
            f"first or pass --config.data.files={example}")


SOURCE_PREFIX = "source:"  # a files entry OBJECTIVE:source:NAME reads a built-in pair source


def _source_pairs(name: str, path=None) -> list[dict]:
    """Every preference pair of the built-in source `name` (mtalign_jax/data/sources), each
    with its `objective`; `path` is the source's file (None: its offline location)."""
    from mtalign_jax.data.sources import read_source

    rows = read_source(name, path=path)
    bad = next((i for i, r in enumerate(rows) if not {"prompt", "chosen", "rejected",
                                                      "objective"} <= set(r)), None)
    if bad is not None:
        raise ValueError(f"source {name!r} does not give preference pairs (row {bad + 1} has "
                         f"{sorted(rows[bad])}; need prompt, chosen, rejected, objective)")
    return rows


def _files_and_sources(files: str, objectives, skip_bad_rows: bool) -> dict[str, list]:
    """{objective: rows} of a files spec whose entries are files or `source:NAME`."""
    from mtalign_jax.data import validate

    by_obj: dict[str, list] = {o: [] for o in objectives}
    for objective, path in validate.parse_files_spec(files):
        if objective is None:
            raise validate.DataError(path, 1, f"preference files are named per objective: "
                                              f"--config.data.files={objectives[0]}:PATH,...")
        if objective not in by_obj:
            raise validate.DataError(path, 1, f"unknown objective {objective!r} named for this "
                                              f"entry in --config.data.files (valid: "
                                              f"{', '.join(objectives)})")
        if path.startswith(SOURCE_PREFIX):
            name = path[len(SOURCE_PREFIX):]
            rows = [r for r in _source_pairs(name) if r["objective"] == objective]
            if not rows:
                raise ValueError(f"--config.data.files entry {objective}:{path}: source "
                                 f"{name!r} has no pairs for objective {objective!r}")
        else:
            rows = validate.load_preference_file(path, objective, objectives=objectives,
                                                 skip_bad_rows=skip_bad_rows)
        by_obj[objective].extend(rows)
    return by_obj


def _fingerprint(config, data, split: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([config.model.get("reference", "") or config.model.name,
                         config.data.max_len, config.data.max_prompt_len]).encode())
    for o in data["objectives"]:
        for r in data[split][o]:
            h.update(json.dumps([o, r.get("prompt"), r["chosen"], r["rejected"]],
                                sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def encode_pairs(rows: list[dict], tok, max_len: int, max_prompt_len: int):
    """Token rows of every chosen then every rejected response, (ids, labels) each, with the
    same shared-prompt truncation as the training pipeline (`Tokenizer.encode_pair`)."""
    pairs = [tok.encode_pair(r["prompt"], r["chosen"], r["rejected"],
                             max_prompt_len=max_prompt_len, max_len=max_len) for r in rows]
    return [c for c, _ in pairs] + [r for _, r in pairs]


def compute_reference_logps(model, params, tok, rows: list[dict], *, max_len, max_prompt_len,
                            batch_size=8, buckets=(64, 128, 256, 512, 1024, 2048),
                            desc="reference log-probs") -> np.ndarray:
    """[N, 2] float32 summed response log-probs (chosen, rejected) under the reference."""
    from mtalign_jax.data import pipeline

    buckets = pipeline.effective_buckets(buckets, max_len)
    seqs = encode_pairs(rows, tok, max_len, max_prompt_len)
    fn = jax.jit(lambda p, b: response_logps(model, p, b))
    # One static shape for the whole pass (one compile): the longest sequence's bucket, and
    # the last batch padded with copies of its first row (their results are dropped).
    t = pipeline.bucket_for(max((len(ids) for ids, _ in seqs), default=1), buckets)
    out = _reference_batches(fn, params, seqs, t, batch_size, tok.pad_id, desc)
    flat = np.concatenate(out) if out else np.zeros((0,), np.float32)
    n = len(rows)
    return np.stack([flat[:n], flat[n:]], axis=1)


def _reference_batches(fn, params, seqs, t, batch_size, pad_id, desc) -> list:
    from mtalign_jax.data import pipeline

    out = []
    for i in tqdm(range(0, len(seqs), batch_size), desc=desc, leave=False):
        chunk = seqs[i: i + batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - real)
        b = pipeline.pad_rows(chunk, t, pad_id)
        b["resp_idx"], b["resp_labels"] = tasks.response_view(b["labels"], bucket=t)
        out.append(np.asarray(jax.device_get(fn(params, b)), np.float32)[:real])
    return out


@contextlib.contextmanager
def local_device_context():
    """One local device, no sharding rules: for work every process does whole and alike (e.g.
    the reference table), so its arrays stay process-local under a multi-process mesh."""
    import flax.linen as nn

    local = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("data",))
    with jax.set_mesh(local), nn.logical_axis_rules(()):
        yield


def load_reference_model(config):
    from mtalign_jax.hf.load import load_pretrained

    name = config.model.get("reference", "") or config.model.name
    model, params, _ = load_pretrained(name, num_heads=1, head_init_noise=0.0,
                                       seed=config.model.head_seed, dtype=config.model.dtype)
    return model, params


def reference_table(config, data, workdir, tok) -> dict[str, dict[str, np.ndarray]]:
    """{split: {objective: [N, 2]}} reference log-probs, computed once into the workdir."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, REFERENCE_FILE)
    fps = {s: _fingerprint(config, data, s) for s in ("train", "eval")}
    if os.path.exists(path):
        z = np.load(path)
        if all(str(z[f"fingerprint_{s}"]) == fps[s] for s in fps):
            return {s: {o: z[f"{s}/{o}"] for o in data["objectives"]} for s in fps}
        print(f"[reference] {path} was computed for other data or model: recomputing")
    with local_device_context():
        return _compute_table(config, data, tok, path, fps)


def _compute_table(config, data, tok, path, fps):
    model, params = load_reference_model(config)
    table, arrays = {}, {}
    for s in ("train", "eval"):
        table[s] = {}
        for o in data["objectives"]:
            table[s][o] = compute_reference_logps(
                model, params, tok, data[s][o], max_len=config.data.max_len,
                max_prompt_len=config.data.max_prompt_len, buckets=tuple(config.data.buckets),
                desc=f"reference {s}/{o}")
            arrays[f"{s}/{o}"] = table[s][o]
        arrays[f"fingerprint_{s}"] = np.array(fps[s])
    if jax.process_index() == 0:
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a kill never leaves a torn file
    return table


def _per_pair(table: dict[str, np.ndarray], objectives, obj_ids, pair_index) -> np.ndarray:
    """[P, ...] rows of a per-objective table {objective: [N, ...]} for a batch's pairs."""
    return np.stack([table[objectives[o]][i] for o, i in zip(obj_ids, pair_index)])


class PreferenceTask:
    """MAH-DPO / DPO. Subclasses (task_modpo.py) change the loss through two hooks:
    `make_step` (the pure step and eval functions) and `pair_tables` (extra per-pair arrays
    added to every batch)."""

    def __init__(self, config):
        self.config = config

    def load_data(self, workdir: str) -> dict:
        return load_preference_data(self.config)

    def make_step(self, model, tx, data: dict):
        """(step, evaluate) of the MAH-DPO (routed) or one-head DPO loss."""
        cfg, lc = self.config, self.config.loss
        objectives = data["objectives"]
        routed = cfg.task == "mahdpo"
        loss_kw = dict(objectives=objectives, beta=lc.beta, label_smoothing=lc.label_smoothing,
                       ipo=lc.ipo, reference_free=lc.reference_free,
                       objective_weights=tuple(lc.objective_weights) or None, routed=routed,
                       group_size=None)
        if not lc.reference_free and lc.reference != "precomputed":
            loss_kw["ref_model"], loss_kw["ref_params"] = load_reference_model(cfg)
        pairs = cfg.data.batch_size
        if cfg.data.balanced and pairs % len(objectives) == 0 and routed:
            loss_kw["group_size"] = 2 * pairs // len(objectives)
        return make_preference_step(model, tx, **loss_kw)

    def pair_tables(self, data: dict, workdir: str, tok, ref) -> dict:
        """Extra per-pair arrays: {batch key: {split: {objective: [N, ...]}}} (none here).
        ref: the reference table {split: {objective: [N, 2]}}, or None when not precomputed."""
        return {}

    def build(self, data: dict, mesh, workdir: str) -> tasks.Built:
        from mtalign_jax.data import pipeline
        from mtalign_jax.training.task_sft import save_final

        cfg = self.config
        objectives = data["objectives"]
        k = len(objectives) if cfg.task == "mahdpo" else 1
        if cfg.model.num_heads != k:
            raise ValueError(f"config.model.num_heads={cfg.model.num_heads} but the task needs "
                             f"{k} head(s) for objectives {', '.join(objectives)}")
        model, params, tok = tasks.load_model(cfg)
        state, tx, _ = tasks.make_state(cfg, model, params, mesh)
        lc = cfg.loss
        ref = None
        if not lc.reference_free and lc.reference == "precomputed":
            ref = reference_table(cfg, data, workdir, tok)
        step, evaluate = self.make_step(model, tx, data)
        extra = self.pair_tables(data, workdir, tok, ref)

        kw = dict(objectives=objectives, tokenizer=tok, max_len=cfg.data.max_len,
                  max_prompt_len=cfg.data.max_prompt_len, batch_pairs=cfg.data.batch_size,
                  buckets=tuple(cfg.data.buckets), seed=cfg.seed,
                  shard_index=0, shard_count=1,  # the global batch; see tasks.make_placer
                  balanced=bool(cfg.data.balanced))
        train_iter = iter(pipeline.preference_dataset(data["train"], **kw))

        def prep(batch, split):
            b = tasks.prepare_batch(batch)
            b["objective_ids"] = b.pop("head_ids").astype(np.int32)
            pidx = b.pop("pair_index")
            obj = b["objective_ids"][:pidx.shape[0]]
            if ref is not None:
                r = _per_pair(ref[split], objectives, obj, pidx)
                b["ref_chosen"], b["ref_rejected"] = r[:, 0], r[:, 1]
            elif lc.reference_free:
                b["ref_chosen"] = b["ref_rejected"] = np.zeros((pidx.shape[0],), np.float32)
            for key, table in extra.items():
                b[key] = _per_pair(table[split], objectives, obj, pidx)
            return b

        place = tasks.make_placer(mesh, cfg.mesh.rules)
        eval_batches = []
        if all(data["eval"][o] for o in objectives):
            ev_iter = iter(pipeline.preference_dataset(data["eval"], **dict(kw, seed=0)))
            eval_batches = [prep(next(ev_iter), "eval") for _ in range(cfg.eval_batches)]
        return tasks.Built(
            state=state, step=step, evaluate=evaluate, train_iter=train_iter,
            next_batch=lambda it: prep(next(it), "train"), place=place,
            run_eval=tasks.eval_runner(eval_batches, place),
            finish=lambda st, wd: save_final(model, st, cfg.model.name, wd))
