"""Embedding method pca: embedding.yaml (its metadata) and embedder.py (:func:`.embedder.pca_embedding`, its
Embedder)."""
