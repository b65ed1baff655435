"""The foundation models both the annotation methods and the embedding methods run, one package each: the code that
loads a model, reads its genes and tokens, and embeds cells. ``methods/<id>/`` fine-tunes a model for annotation,
``embeddings/<id>/`` embeds with it zero-shot; both import it from here, never from each other.

- :mod:`.scgpt`: scGPT through the authors' package (``scgpt==0.2.4``, in ``.venv-scgpt``)
- :mod:`.geneformer`: Geneformer through ``transformers``, with its rank-value tokeniser written here

Our own CellPLM is the model package itself (:mod:`cellplm.model`, :mod:`cellplm.embed`, :mod:`cellplm.finetune`).
"""
