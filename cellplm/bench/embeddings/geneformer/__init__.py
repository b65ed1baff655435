"""Embedding method geneformer: embedding.yaml (its metadata) and embedder.py (its Embedder)."""
