"""scGPT, shared by the method ``scgpt`` and the embedding method ``scgpt``: :mod:`.upstream` (the authors' package,
imported in one place), :mod:`.genes` (symbols, counts, vocabulary match), :mod:`.tokenizer` (binned values and
tokens), :mod:`.model` (model directory, weights, device, forward pass) and :mod:`.embedder` (zero-shot embeddings)."""
