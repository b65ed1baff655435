"""Embedding method pca: embedding.yaml (its metadata) and embedder.py (:class:`.embedder.PCAEmbedder`, its
Embedder; the code is :mod:`..lognorm_pca`)."""
