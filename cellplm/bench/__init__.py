"""Library code shared by the workflow scripts and the tests.

Stages, in the order data flows through the workflow:

- :mod:`.data`: obtain each dataset (services, downloads, packaged demo and synthetic data), one canonical count
  matrix per dataset (genes mapped by :mod:`cellplm.genes`), and its train / test / solution files
- :mod:`.methods`: one folder per method and the harness that records every run; :mod:`.embeddings`: one folder
  per embedding method of the zero-shot track. They never import each other: what both need is below them,
  :mod:`.models` (scGPT, Geneformer), :mod:`.normalise` and :mod:`.embedding_results`
- :mod:`.metrics`: scores of one prediction
- :mod:`.report`: tables and figures for the report; :mod:`.speed`: the embedding-speed table

Around them: :mod:`.config` (what the libraries read from a workflow config), :mod:`.checkpoints` (the CellPLM
checkpoint a run uses), :mod:`.io`, :mod:`.errors`, :mod:`.timing` and :mod:`.cli`.

On top of them, the workflow's glue, which nothing above imports: :mod:`.workflow` (what the Snakefile needs: config
checks, registries, job parameters), :mod:`.checkpoint_plan` (how a config obtains the CellPLM checkpoint),
:mod:`.codehash` (the code hash of each rule's jobs) and :mod:`.job` (the wrapper of every workflow script).
"""
