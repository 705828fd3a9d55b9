"""Run every benchmark case against its baseline, print a table of ratios, write JSON.

    python -m benchmarks.run            # full: K = 2, 3, 5; all cases (tens of minutes on 2 cores)
    python -m benchmarks.run --quick    # headline K = 2 and the cheap cases, fewer repetitions
    python -m benchmarks.run --quick --smoke --out /tmp/r.json   # tiny preset, 1 rep (tests)
    python -m benchmarks.run --only mahdpo   # re-measure the step and memory cases (full sizes)
                                             # and replace just those entries in results.json

Each case runs in its own subprocess (`--case`), so its peak RSS is its own and ours and the
baseline never share a process. The output JSON is
`{"machine": {...}, "results": [...]}`; every result has `bench, model, heads, pairs, seq_len,
dtype, variant, seconds, baseline_seconds, ratio, peak_rss_mb` (None where a field does not apply,
e.g. `seconds` of a memory-only case) plus case-specific fields (README.md lists them).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

import benchmarks

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "results.json"
MARK = "BENCH_RESULT_JSON:"
VARIANTS = ("precomputed_ref", "live_ref", "all_heads")
ONLY = {"mahdpo": ("matmul_peak", "mahdpo_step", "mahdpo_memory")}  # --only: benches it redoes
FIELDS = ("bench", "model", "heads", "pairs", "seq_len", "dtype", "variant", "seconds",
          "baseline_seconds", "ratio", "peak_rss_mb")


# ----------------------------------------------------------------------------- the plan


def plan(quick: bool, smoke: bool) -> dict:
    """Sizes of every case for a run mode."""
    model = "tiny" if smoke else "smollm2-135m-instruct"
    reps = 1 if smoke else (3 if quick else 5)
    # smoke: larger head noise, so the loss check sees heads that really differ (routing errors)
    noise = 0.1 if smoke else 1e-3
    common = {"model": model, "seed": 42, "head_init_noise": noise, "warmup": 1, "reps": reps}
    # quick times the headline variants only; all_heads' memory is still compiled (no run)
    variants = list(VARIANTS[:2]) if quick and not smoke else list(VARIANTS)
    # the side cases (not the headline step): 2 timed reps in quick
    side = dict(common, reps=2) if quick and not smoke else common
    return {
        "mahdpo": dict(common, heads=[2] if quick else [2, 3, 5], variants=variants,
                       pairs=4, seq_len=128, prompt_len=32, beta=0.1),
        # K values whose step memory is compiled (no run) when no timed case has that K
        "memory_heads": [2] if smoke else ([2, 5] if quick else [1, 2, 3, 5, 8]),
        "inference": dict(side, batch=4, seq_len=128),
        "param_memory": [
            {"model": "qwen2.5-7b-instruct", "heads": 2, "mesh": mesh}
            for mesh in ([{"fsdp": 8, "tensor": 1}] if quick else
                         [{"fsdp": 8, "tensor": 1}, {"fsdp": 16, "tensor": 4}])
        ] + ([] if quick else [{"model": "llama-3.1-8b-instruct", "heads": 3,
                                "mesh": {"fsdp": 16, "tensor": 4}}]),
        "sampling": dict(side, batch=4, prompt_len=32, new_tokens=16 if smoke else 64),
        "matmul": {"n": 256 if smoke else 2048, "reps": 3 if smoke else 20},
        # guided decoding, cache vs re-encode (quick: the shortest case, the paper's baseline)
        "guided": dict(common, k=5, step_tokens=8 if smoke else 48,
                       steps=[2] if smoke else ([5] if quick else [5, 10, 20]),
                       modes=["reencode_each"] if quick else ["reencode", "reencode_each"],
                       reps=1 if (smoke or quick) else 2),
    }


# ----------------------------------------------------------------------------- subprocesses


HUGE_PAGES = "glibc.malloc.hugetlb=1"  # the Makefile's default (see there)


def child_env() -> dict:
    """The environment of a case: as ours, minus any fake multi-device XLA flag (a benchmark
    runs on the real devices), with the Makefile's GLIBC_TUNABLES default when unset (ours and
    the PyTorch baselines alike)."""
    env = dict(os.environ)
    env.setdefault("GLIBC_TUNABLES", HUGE_PAGES)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_case(fn: str, spec: dict, log) -> dict:
    """Run `module:function(spec)` in a fresh interpreter (or in this process under --smoke)
    and return its result dict."""
    t0 = time.perf_counter()
    if benchmarks.SHARED_PROCESS:  # --smoke: every case in this process (RSS not isolated)
        module, name = fn.split(":")
        out = json.loads(json.dumps(getattr(importlib.import_module(module), name)(spec)))
        log(f"  {fn} in-process ({time.perf_counter() - t0:.0f} s)")
        return out
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--case", fn, json.dumps(spec)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark case {fn} {json.dumps(spec)} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    log(f"  {fn} {json.dumps({k: spec[k] for k in sorted(spec) if k != 'seed'})} "
        f"({time.perf_counter() - t0:.0f} s)")
    return json.loads(lines[-1][len(MARK):])


def case_main(fn: str, spec_json: str) -> None:
    module, name = fn.split(":")
    out = getattr(importlib.import_module(module), name)(json.loads(spec_json))
    print(MARK + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- the cases


def result(**kw) -> dict:
    out = {f: None for f in FIELDS}
    out.update(kw)
    return out


def mahdpo_results(p: dict, peak: float, log) -> list[dict]:
    """bench `mahdpo_step`: every variant at every K against the torch baseline of that K."""
    out = []
    for k in p["heads"]:
        base_spec = {key: p[key] for key in ("model", "seed", "head_init_noise", "warmup",
                                             "reps", "pairs", "seq_len", "prompt_len", "beta")}
        base_spec["heads"] = k
        base = run_case("benchmarks.mahdpo_step:run_baseline", dict(base_spec, variant="torch"),
                        log)
        for variant in p["variants"]:
            ours = run_case("benchmarks.mahdpo_step:run_ours", dict(base_spec, variant=variant),
                            log)
            out.append(result(
                bench="mahdpo_step", model=p["model"], heads=k, pairs=p["pairs"],
                seq_len=p["seq_len"], prompt_len=p["prompt_len"], dtype="float32",
                variant=variant, seconds=ours["seconds"], baseline_seconds=base["seconds"],
                ratio=base["seconds"] / ours["seconds"], peak_rss_mb=ours["peak_rss_mb"],
                baseline_peak_rss_mb=base["peak_rss_mb"], compile_seconds=ours["compile_seconds"],
                loss=ours["loss"], baseline_loss=base["loss"], flops=ours["flops"],
                flops_per_second=ours["flops_per_second"],
                mfu=ours["flops_per_second"] / peak,
                compiled_peak_mb=ours.get("compiled_peak_mb"),
                compiled_temp_mb=ours.get("compiled_temp_mb"),
                reps=p["reps"], all_seconds=ours["all_seconds"],
                baseline_all_seconds=base["all_seconds"], baseline_threads=base["threads"]))
    return out


def memory_results(p: dict, heads: list[int], timed_results: list[dict], log) -> list[dict]:
    """bench `mahdpo_memory`: XLA's compiled peak of the step, routed vs all heads, vs K.
    `peak_mb` is routed (precomputed_ref), `baseline_peak_mb` all heads; ratio = all / routed.
    `temp_mb` / `baseline_temp_mb`: the temporaries alone (activations and logits; the rest is
    parameters, gradients and optimizer state, which grow with K for both)."""
    known = {(r["heads"], r["variant"]): r for r in timed_results}
    out = []
    for k in heads:
        mem = {}
        for variant in ("precomputed_ref", "all_heads"):
            if (k, variant) in known:
                mem[variant] = known[(k, variant)]
                continue
            spec = {key: p[key] for key in ("model", "seed", "head_init_noise", "pairs",
                                            "seq_len", "prompt_len", "beta")}
            mem[variant] = run_case("benchmarks.mahdpo_step:memory_only",
                                    dict(spec, heads=k, variant=variant), log)
        routed, full = mem["precomputed_ref"], mem["all_heads"]
        out.append(result(
            bench="mahdpo_memory", model=p["model"], heads=k, pairs=p["pairs"],
            seq_len=p["seq_len"], dtype="float32", variant="routed_vs_all_heads",
            peak_mb=routed["compiled_peak_mb"], baseline_peak_mb=full["compiled_peak_mb"],
            temp_mb=routed["compiled_temp_mb"], baseline_temp_mb=full["compiled_temp_mb"],
            ratio=full["compiled_peak_mb"] / routed["compiled_peak_mb"]))
    return out


def inference_results(p: dict, log) -> list[dict]:
    """bench `inference_mixed_heads`: forward of 2 mixed heads vs the 1-head model."""
    one = run_case("benchmarks.memory:inference_case", dict(p, heads=1), log)
    mix = run_case("benchmarks.memory:inference_case", dict(p, heads=2), log)
    return [result(
        bench="inference_mixed_heads", model=p["model"], heads=2, pairs=None,
        batch=p["batch"], seq_len=p["seq_len"], dtype="float32", variant="mixed_2_vs_1_head",
        seconds=mix["seconds"], baseline_seconds=one["seconds"],
        ratio=one["seconds"] / mix["seconds"], peak_rss_mb=mix["peak_rss_mb"],
        baseline_peak_rss_mb=one["peak_rss_mb"], compiled_peak_mb=mix.get("compiled_peak_mb"),
        baseline_compiled_peak_mb=one.get("compiled_peak_mb"))]


def param_memory_results(cases: list[dict], log) -> list[dict]:
    """bench `param_memory`: per-device params + RMSprop state of big presets on a mesh."""
    out = []
    for c in cases:
        r = run_case("benchmarks.memory:param_memory_case", c, log)
        out.append(result(bench="param_memory", model=c["model"], heads=c["heads"],
                          dtype="float32",
                          variant="fsdp{fsdp}_tensor{tensor}".format(**c["mesh"]),
                          mesh=c["mesh"], **r))
    return out


def sampling_results(p: dict, log) -> list[dict]:
    """bench `sampling_throughput`: our generate vs transformers generate, greedy."""
    ours = run_case("benchmarks.decoding:ours_case", p, log)
    base = run_case("benchmarks.decoding:baseline_case", p, log)
    same = sum(a == b for a, b in zip(ours["tokens"], base["tokens"])) / len(ours["tokens"])
    return [result(
        bench="sampling_throughput", model=p["model"], heads=1, pairs=None, batch=p["batch"],
        seq_len=p["prompt_len"] + p["new_tokens"], prompt_len=p["prompt_len"],
        new_tokens=p["new_tokens"], dtype="float32", variant="greedy_generate",
        seconds=ours["seconds"], baseline_seconds=base["seconds"],
        ratio=base["seconds"] / ours["seconds"], peak_rss_mb=ours["peak_rss_mb"],
        baseline_peak_rss_mb=base["peak_rss_mb"], tokens_per_second=ours["tokens_per_second"],
        baseline_tokens_per_second=base["tokens_per_second"], same_tokens_fraction=same)]


def guided_results(p: dict, log) -> list[dict]:
    """bench `guided_decoding`: continuing cache vs re-encoding the prefix, same tokens."""
    out = []
    keys = ("model", "seed", "k", "step_tokens", "warmup", "reps")
    for n in p["steps"]:
        spec = dict({key: p[key] for key in keys}, steps=n)
        ours = run_case("benchmarks.guided:case", dict(spec, mode="cache"), log)
        for mode in p["modes"]:
            base = run_case("benchmarks.guided:case", dict(spec, mode=mode), log)
            out.append(result(
                bench="guided_decoding", model=p["model"], heads=1, pairs=None, batch=1,
                seq_len=ours["prompt_tokens"] + len(ours["tokens"]), dtype="float32",
                variant=f"cache_vs_{mode}", k=p["k"], steps=n, step_tokens=p["step_tokens"],
                prompt_tokens=ours["prompt_tokens"], seconds=ours["seconds"],
                baseline_seconds=base["seconds"], ratio=base["seconds"] / ours["seconds"],
                peak_rss_mb=ours["peak_rss_mb"], baseline_peak_rss_mb=base["peak_rss_mb"],
                same_tokens=ours["tokens"] == base["tokens"], steps_done=ours["steps_done"],
                all_seconds=ours["all_seconds"], baseline_all_seconds=base["all_seconds"]))
    return out


# ----------------------------------------------------------------------------- reporting


def thp() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise" or "never"), if known."""
    try:
        text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def machine_info() -> dict:
    from mtalign_jax import machine

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": machine.cpu_name(), "vector_extensions": machine.vector_extensions(),
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": version("jax"),
            "jaxlib": version("jaxlib"), "torch": version("torch"),
            "transformers": version("transformers"),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", HUGE_PAGES),
            "transparent_hugepages": thp(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def table(results: list[dict]) -> str:
    """A markdown table of every result's headline numbers."""
    def f(x, fmt):
        return "" if x is None else format(x, fmt)

    rows = ["| bench | model | K | variant | ours s | baseline s | ratio | MFU | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["bench"] == "param_memory":
            rows.append(f"| param_memory | {r['model']} | {r['heads']} | {r['variant']} | "
                        f"per device: params {r['per_device_param_mb']:.0f} MB + RMSprop "
                        f"{r['per_device_opt_mb']:.0f} MB | | | | |")
            continue
        if r["bench"] == "mahdpo_memory":
            rows.append(f"| mahdpo_memory | {r['model']} | {r['heads']} | {r['variant']} | "
                        f"routed {r['peak_mb']:.0f} MB (temp {r['temp_mb']:.0f}) | all heads "
                        f"{r['baseline_peak_mb']:.0f} MB (temp {r['baseline_temp_mb']:.0f}) | "
                        f"{r['ratio']:.2f} | | |")
            continue
        rows.append(f"| {r['bench']} | {r['model']} | {r['heads']} | {r['variant']} | "
                    f"{f(r['seconds'], '.3f')} | {f(r['baseline_seconds'], '.3f')} | "
                    f"{f(r['ratio'], '.2f')} | {f(r.get('mfu'), '.1%')} | "
                    f"{f(r['peak_rss_mb'], '.0f')} |")
    return "\n".join(rows)


def merge_partial(out: pathlib.Path, results: list[dict], machine: dict,
                  benches: tuple) -> tuple[list[dict], dict]:
    """`--only`: the entries of `benches` in the existing `out` replaced by this run's, the other
    entries and the machine block of the run that measured them kept; this run is appended to
    `machine["partial_runs"]` (its command, date, seconds and allocator settings)."""
    if not out.exists():
        raise SystemExit(f"--only needs an existing {out} to update (run the full benchmark "
                         f"first, or pass --out)")
    old = json.loads(out.read_text())
    kept = [r for r in old["results"] if r.get("bench") not in benches]
    merged = dict(old["machine"])
    merged["partial_runs"] = list(merged.get("partial_runs", [])) + [
        {k: machine[k] for k in ("command", "date", "run_seconds", "glibc_tunables",
                                 "transparent_hugepages") if k in machine}]
    return results + kept, merged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="K=2 only, fewer repetitions")
    ap.add_argument("--smoke", action="store_true", help="tiny preset, 1 timed rep (tests)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output JSON path")
    ap.add_argument("--only", choices=sorted(ONLY),
                    help="re-run one group of cases (with the matmul peak) and replace those "
                         "entries of an existing --out; machine.partial_runs records it")
    ap.add_argument("--case", nargs=2, metavar=("MODULE:FN", "SPEC_JSON"),
                    help=argparse.SUPPRESS)  # internal: run one case in this process
    args = ap.parse_args(argv)
    if args.case:
        case_main(*args.case)
        return 0

    t0 = time.perf_counter()
    benchmarks.SHARED_PROCESS = args.smoke
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    p = plan(args.quick, args.smoke)
    log(f"benchmarks ({'quick' if args.quick else 'full'}{', smoke' if args.smoke else ''}"
        f"{', only ' + args.only if args.only else ''})")
    peak = run_case("benchmarks.mahdpo_step:matmul_peak", p["matmul"], log)
    results = [result(bench="matmul_peak", model=None, heads=None, dtype="float32",
                      variant=f"jit_matmul_{p['matmul']['n']}", seconds=peak["seconds"],
                      flops_per_second=peak["flops_per_second"])]
    step = mahdpo_results(p["mahdpo"], peak["flops_per_second"], log)
    results += step
    results += memory_results(p["mahdpo"], p["memory_heads"], step, log)
    if not args.only:
        results += inference_results(p["inference"], log)
        results += param_memory_results(p["param_memory"], log)
        results += sampling_results(p["sampling"], log)
        results += guided_results(p["guided"], log)

    command = "python -m benchmarks.run" + "".join(
        f" {a}" for a, on in (("--quick", args.quick), ("--smoke", args.smoke),
                              (f"--only {args.only}", args.only)) if on)
    seconds = round(time.perf_counter() - t0, 1)
    machine = dict(machine_info(), command=command, run_seconds=seconds)
    out = pathlib.Path(args.out)
    if args.only:
        results, machine = merge_partial(out, results, machine, ONLY[args.only])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    print(table(results))
    print(f"\n{machine['cpu']}, {machine['cores']} cores; {command}; "
          f"{seconds:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
