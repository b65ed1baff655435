"""Embedding method pca_per_batch (a control): embedding.yaml (its metadata) and embedder.py (its Embedder; the code
it shares with ``pca`` is :mod:`..lognorm_pca`)."""
