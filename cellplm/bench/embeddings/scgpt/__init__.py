"""Embedding method scgpt: embedding.yaml (its metadata) and embedder.py (its Embedder)."""
