"""The real SmolLM2-135M-Instruct answers "What is the capital of France?" with Paris (greedy),
through `load_pretrained` + `generate` and through the decode CLI."""
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from mtalign_jax.decoding.sampling import generate

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"


@pytest.mark.heavy
def test_generate_answers_paris(smollm2):
    model, params, tok = smollm2
    prompt = tok.encode_chat([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    other = tok.encode_chat([{"role": "user", "content": "Say hello."}])
    res = generate(model, params, [prompt, other], max_new_tokens=16, tokenizer=tok,
                   rng=jax.random.PRNGKey(0))
    assert "Paris" in res[0].text, res[0].text
    assert res[0].text == tok.decode(res[0].tokens, skip_special=True)
    assert len(res[0].tokens) <= 16
    # Batched with a longer/shorter neighbour, the answer is the same as alone.
    (alone,) = generate(model, params, [prompt], max_new_tokens=16, tokenizer=tok)
    assert alone.tokens == res[0].tokens


@pytest.mark.heavy
def test_cli_answers_paris():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mtalign_jax.decode", "--model", "smollm2-135m-instruct",
         "--prompt", QUESTION, "--max_new_tokens", "16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Paris" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert QUESTION not in proc.stdout and "<|im_" not in proc.stdout  # only the completion
