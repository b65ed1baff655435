"""Data: every dataset obtained by its service's public contract (:mod:`.services`, :mod:`.download`) or built here
(:mod:`.sources`: packaged demo data, PBMC12K, synthetic data, archive members; :mod:`.catalog`: the files each
source is), preprocessed into one canonical count matrix (:mod:`.preprocess`, :mod:`.counts`), and split into
train / test / solution files (:mod:`.split`, the OpenProblems contract)."""
