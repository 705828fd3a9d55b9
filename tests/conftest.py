"""Test set-up: 8 simulated CPU devices, set before JAX is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """../shared beside the project root; a test that needs it fails (never skips) without it."""
    assert SHARED.is_dir(), f"../shared is missing beside the project root ({SHARED})"
    return SHARED


@pytest.fixture(scope="session")
def smollm2():
    """(model, params, tokenizer) of the real SmolLM2-135M-Instruct, loaded once per session."""
    import mtalign_jax

    return mtalign_jax.load_pretrained("smollm2-135m-instruct")
