"""A real 2-process run on localhost (jax.distributed, 4 fake CPU devices each) matches the
1-process run on 8 devices."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(workdir, config):
    return [sys.executable, "-m", "mtalign_jax.train", "--config", config, "--workdir",
            str(workdir), "--config.total_steps=3", "--config.checkpoint_every=3",
            "--config.eval_every=0", "--config.mesh.shape=(-1,1,1)"]


def _env(devices, **extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l)["loss"] for l in f if '"loss"' in l]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/sft.py:tiny", "configs/mahdpo_math.py:tiny"])
def test_two_process_run_matches_single_process(tmp_path, config):
    single = tmp_path / "single"
    subprocess.run(_cmd(single, config), cwd=ROOT, env=_env(8), check=True,
                   capture_output=True, timeout=300)
    multi = tmp_path / "multi"
    port = _free_port()
    procs = [subprocess.Popen(
        _cmd(multi, config), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=_env(4, MTALIGN_COORDINATOR=f"127.0.0.1:{port}",
                            MTALIGN_NUM_PROCESSES=2, MTALIGN_PROCESS_ID=i))
        for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    a, b = _losses(single), _losses(multi)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(x - y) < 1e-5, (a, b)
