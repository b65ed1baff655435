"""Embedding method scvi: embedding.yaml (its metadata) and embedder.py (its Embedder)."""
