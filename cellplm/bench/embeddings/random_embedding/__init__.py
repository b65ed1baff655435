"""Embedding method random_embedding (a control): embedding.yaml (its metadata) and embedder.py (its Embedder)."""
