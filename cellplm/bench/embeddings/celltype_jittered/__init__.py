"""Embedding method celltype_jittered (a control): embedding.yaml (its metadata) and embedder.py (its Embedder)."""
