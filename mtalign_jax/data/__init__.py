"""Data: sources, tokenizer, validation and grain pipelines."""
