"""SFT task: cross-entropy on response tokens (configs/sft.py)."""
from __future__ import annotations

import os

import jax

from mtalign_jax.training import tasks
from mtalign_jax.training.steps import make_sft_step


def _sft_rows_from_source(name: str) -> list[dict]:
    """Prompt/response rows from a built-in offline math source: the reference step solution
    (steps joined by blank lines) ending in the boxed answer."""
    from mtalign_jax.data.sources import load_source

    if name not in ("gsm8k", "math500"):
        raise ValueError(f"data.source={name!r}: SFT rows come from gsm8k or math500")
    rows = []
    for ex in load_source(name):
        if name == "gsm8k":
            body = "\n\n".join(ex["steps"])
            response = f"{body}\n\nThe answer is $\\boxed{{{ex['answer']}}}$."
        else:
            response = ex["solution"]
        rows.append({"prompt": ex["prompt"], "response": response})
    return rows


class SFTTask:
    def __init__(self, config):
        self.config = config

    def load_data(self, workdir: str) -> dict:
        """Validated rows: the named file, a built-in source, or labelled synthetic data."""
        from mtalign_jax.data import pipeline, synthetic, validate

        c = self.config.data
        if c.files:
            rows, _ = validate.validate_files(c.files, "sft", skip_bad_rows=c.skip_bad_rows)
        elif c.source:
            rows = _sft_rows_from_source(c.source)
        elif c.synthetic:
            rows = synthetic.synthetic_sft(c.synthetic, seed=self.config.seed)  # SYNTHETIC
        else:
            raise ValueError("no SFT data: set --config.data.files=PATH (JSONL with prompt and "
                             "response, or messages)")
        train, held = pipeline.split_train_eval(rows, eval_frac=c.eval_frac, seed=c.split_seed,
                                                eval_cap=c.eval_cap, source_cap=c.source_cap)
        return {"train": train, "eval": held}

    def build(self, data: dict, mesh, workdir: str) -> tasks.Built:
        from mtalign_jax.data import pipeline

        cfg = self.config
        model, params, tok = tasks.load_model(cfg)
        state, tx, _ = tasks.make_state(cfg, model, params, mesh)
        step, evaluate = make_sft_step(model, tx)
        kw = dict(tokenizer=tok, max_len=cfg.data.max_len, max_prompt_len=cfg.data.max_prompt_len,
                  batch_size=cfg.data.batch_size, buckets=tuple(cfg.data.buckets),
                  seed=cfg.seed, shard_index=0, shard_count=1)  # global batch: make_placer
        train_iter = iter(pipeline.sft_dataset(data["train"], **kw))
        place = tasks.make_placer(mesh, cfg.mesh.rules)
        eval_batches = []
        if data["eval"]:
            ev_iter = iter(pipeline.sft_dataset(data["eval"], **kw))
            eval_batches = [tasks.prepare_batch(next(ev_iter)) for _ in range(cfg.eval_batches)]
        self.model, self.tok = model, tok
        return tasks.Built(
            state=state, step=step, evaluate=evaluate, train_iter=train_iter,
            next_batch=lambda it: tasks.prepare_batch(next(it)), place=place,
            run_eval=tasks.eval_runner(eval_batches, place),
            finish=lambda st, wd: save_final(model, st, cfg.model.name, wd))


def save_final(model, state, base_model: str, workdir: str) -> None:
    """The trained model as a loadable directory: workdir/model (our params + model config)."""
    from mtalign_jax.checkpoint import save_params

    if jax.process_index() == 0:
        save_params(os.path.join(workdir, "model"), jax.device_get(state.params),
                    {"model_config": model.cfg.to_dict(), "num_heads": model.num_heads,
                     "base_model": base_model})
