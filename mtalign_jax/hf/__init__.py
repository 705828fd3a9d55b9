"""Checkpoint loaders: GGUF, HF safetensors directories, our own workdirs."""
