"""Geneformer, shared by the method ``geneformer`` and the embedding method ``geneformer``: :mod:`.files` (the model
directory and its dictionaries), :mod:`.tokenizer` (the rank-value tokeniser) and :mod:`.embedder` (zero-shot
embeddings as Geneformer's EmbExtractor computes them)."""
