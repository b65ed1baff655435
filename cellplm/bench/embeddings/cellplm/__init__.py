"""Embedding method cellplm: embedding.yaml (its metadata) and embedder.py (its Embedder)."""
