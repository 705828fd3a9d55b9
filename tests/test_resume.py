"""Resume: SIGKILL a real training process mid-run, rerun the same command, compare metrics."""
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = {"tokens_per_s", "step_seconds"}  # wall-clock fields differ between runs by nature


def _cmd(workdir, config="configs/sft.py:tiny", steps=9):
    return [sys.executable, "-m", "mtalign_jax.train", "--config", config,
            "--workdir", str(workdir), f"--config.total_steps={steps}",
            "--config.checkpoint_every=3", "--config.eval_every=3", "--config.log_every=1"]


def _metrics(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            key = (rec["step"], "eval" if any(k.startswith("eval/") for k in rec) else "train")
            out[key] = {k: v for k, v in rec.items() if k not in TIMING}
    return out


def _run_killed(workdir, config, steps, kill_after_step):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(_cmd(workdir, config, steps), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path):
            with open(path) as f:
                steps_seen = [json.loads(l)["step"] for l in f if l.strip().endswith("}")]
            if steps_seen and max(steps_seen) >= kill_after_step:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _check(tmp_path, config, steps, kill_after):
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run(_cmd(full, config, steps), cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    _run_killed(killed, config, steps, kill_after)
    assert os.path.isdir(killed / "checkpoints")
    proc = subprocess.run(_cmd(killed, config, steps), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _metrics(full), _metrics(killed)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], (key, a[key], b[key])


def test_sft_resume_after_sigkill_matches_uninterrupted(tmp_path):
    _check(tmp_path, "configs/sft.py:tiny", steps=9, kill_after=4)


def test_mahdpo_resume_after_sigkill_matches_uninterrupted(tmp_path):
    _check(tmp_path, "configs/mahdpo_math.py:tiny", steps=8, kill_after=4)
