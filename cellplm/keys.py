"""The AnnData keys the files of the model's command line and of the benchmark use, defined once.

The benchmark's canonical files (:mod:`cellplm.bench.data`) hold raw counts with the labels in ``obs[LABEL]`` and
the batch (CellPLM's sentence) in ``obs[BATCH]``; its train files mark validation cells in ``obs[IS_VALIDATION]``; a
method's prediction file holds ``obs[PREDICTION]`` and an embedding method's file ``obsm[EMBEDDING]``. The model
package reads the same names by default (``cellplm finetune``, :class:`cellplm.finetune.CellTypeAnnotator`), so the
benchmark's files go into it as they are. Defined here, in the model package, because the model never imports the
benchmark.
"""

LABEL = "cell_type"  # obs: the cell-type label (train and solution files)
BATCH = "batch"  # obs: the batch, i.e. the sentence CellPLM reads the cells in
IS_VALIDATION = "is_validation"  # obs of a train file: cells held out for early stopping and model selection
PREDICTION = "label_pred"  # obs of a prediction file: the predicted label
EMBEDDING = "X_emb"  # obsm of an embedding file: one vector per cell
CELLPLM_EMBEDDING = "X_cellplm"  # obsm of ``cellplm embed``'s output (the key :func:`cellplm.embed.embed` adds)
BATCH_KEY = "batch_key"  # uns of the canonical and split files: the dataset's column that obs[BATCH] holds
