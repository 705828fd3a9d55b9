"""The sharded training loop shared by every task.

Order of work (so bad input fails before anything expensive or persistent happens):
  1. validate every data file named in the config (task.load_data);
  2. create the workdir, write config.json, start jax.distributed when launched multi-process;
  3. mesh, model and sharded state; restore the latest checkpoint when there is one (resume);
  4. jitted step under the mesh (state donated), metrics.jsonl (flushed per line), tqdm bar,
     periodic eval and orbax checkpoints (params, optimizer, step, RNG, data iterator).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.training.state import TrainState


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize` when launched as several processes.

    Local multi-process runs set MTALIGN_COORDINATOR (host:port), MTALIGN_NUM_PROCESSES and
    MTALIGN_PROCESS_ID; on TPU pods set MTALIGN_DISTRIBUTED=auto (JAX finds the rest).
    """
    if jax.distributed.is_initialized():
        return
    coord = os.environ.get("MTALIGN_COORDINATOR")
    if coord:
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=int(os.environ["MTALIGN_NUM_PROCESSES"]),
            process_id=int(os.environ["MTALIGN_PROCESS_ID"]))
    elif os.environ.get("MTALIGN_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


def _to_python(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        out[k] = v.item() if v.ndim == 0 else v.tolist()
        if isinstance(out[k], bool):
            out[k] = bool(out[k])
    return out


def poison_batch(batch: dict) -> dict:
    """Fault injection for tests (config.debug_nan_step): NaN into the batch's float inputs."""
    floats = [k for k, v in batch.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    if not floats:
        raise ValueError("debug_nan_step needs a task whose batches carry float inputs "
                         "(e.g. precomputed reference log-probs)")
    return {k: (np.full_like(v, np.nan) if k in floats else v) for k, v in batch.items()}


class MetricsWriter:
    """Appends one JSON object per line to workdir/metrics.jsonl, flushed as written.

    On resume, lines of steps after the restored checkpoint (written by the killed run before
    it died) are dropped first, so the file equals an uninterrupted run's.
    """

    def __init__(self, path: str, resume_step: int, enabled: bool = True):
        self.enabled = enabled
        self.path = path
        if not enabled:
            return
        kept = []
        if resume_step > 0 and os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line of a killed run
                    if rec.get("step", 0) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
        with open(path, "w") as f:
            f.writelines(kept)
        self.f = open(path, "a")

    def write(self, record: dict) -> None:
        if self.enabled:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()

    def close(self):
        if self.enabled:
            self.f.close()


def run(config, workdir: str) -> dict[str, Any]:
    """Train `config.task` in `workdir`; returns the final metrics."""
    from mtalign_jax.training import tasks

    t_start = time.time()
    task = tasks.get_task(config)
    data = task.load_data(workdir)  # 1. validation first, before any directory or model

    maybe_initialize_distributed()  # 2.
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    from mtalign_jax import checkpoint as ckpt_lib
    from mtalign_jax.parallel import mesh as mesh_lib

    import flax.linen as nn
    from jax.sharding import NamedSharding, PartitionSpec

    from mtalign_jax.parallel.rules import resolve_rules

    mesh = mesh_lib.make_mesh(config.mesh)  # 3.
    with jax.set_mesh(mesh), nn.logical_axis_rules(resolve_rules(config.mesh.rules, mesh)):
        built = task.build(data, mesh, workdir)
        state: TrainState = built.state
        ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     keep=config.keep_checkpoints)
        train_iter = built.train_iter
        start = 0
        latest = ckpt.latest_step()
        if latest is not None:
            state, it_state = ckpt.restore(latest, state)
            train_iter.set_state(it_state)
            start = int(latest)
        writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), start, is_main)

        state_shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)
        replicated = NamedSharding(mesh, PartitionSpec())
        step_fn = jax.jit(built.step, donate_argnums=(0,),
                          out_shardings=(state_shardings, replicated))
        eval_fn = jax.jit(built.evaluate, out_shardings=replicated)
        from tqdm.auto import tqdm

        bar = tqdm(total=config.total_steps, initial=start, desc=f"{config.task}",
                   disable=not is_main, dynamic_ncols=True)
        last: dict = {}
        t_prev, tokens_since = time.time(), 0
        for step in range(start, config.total_steps):
            batch = built.next_batch(train_iter)
            tokens_since += int(np.sum(batch.pop("_tokens", 0)))
            if config.get("debug_nan_step", 0) == step + 1:
                batch = poison_batch(batch)
            rng = jax.random.fold_in(state.rng, step)
            t_step = time.time()
            state, metrics = step_fn(state, built.place(batch), rng)
            if config.nan_policy == "stop" and not bool(metrics["finite"]):
                raise FloatingPointError(
                    f"step {step + 1}: non-finite loss or gradients (nan_policy='stop'); "
                    f"parameters were not updated; last good checkpoint in {ckpt.directory}")
            done = step + 1
            if done % config.log_every == 0 or done == config.total_steps:
                rec = {"step": done, **_to_python(metrics)}
                now = time.time()
                rec["tokens_per_s"] = tokens_since / max(now - t_prev, 1e-9)
                rec["step_seconds"] = now - t_step
                t_prev, tokens_since = now, 0
                if not rec.get("finite", True):
                    print(f"[train] step {done}: non-finite loss/gradients, update skipped "
                          f"(skipped so far: {rec.get('skipped')})", flush=True)
                writer.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                last = rec
            if config.eval_every and (done % config.eval_every == 0
                                      or done == config.total_steps):
                ev = built.run_eval(eval_fn, state.params)
                if ev:
                    writer.write({"step": done, **{f"eval/{k}": v for k, v in ev.items()}})
                    last.update({f"eval/{k}": v for k, v in ev.items()})
            if done % config.checkpoint_every == 0 or done == config.total_steps:
                ckpt.save(done, state, train_iter.get_state())
            bar.update(1)
        bar.close()
        ckpt.wait()
        writer.close()
        built.finish(state, workdir)
    last["run_seconds"] = time.time() - t_start
    return last
