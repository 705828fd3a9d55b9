"""Decoding: jitted prefill + `lax.while_loop` sampling with a donated KV cache (`sampling.py`),
and PRM-guided decoding that continues the cache step by step (`guided.py`)."""
