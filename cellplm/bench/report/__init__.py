"""Report: the tidy tables (:mod:`.aggregate`: scores, summary, the comparison with the published table, runs,
datasets) and the figures (:mod:`.plots`)."""
