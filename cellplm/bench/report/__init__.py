"""Report: the tidy tables (:mod:`.aggregate`: scores, summary, the comparison with the published table, runs,
datasets), the figures (:mod:`.plots`), the readings of the published "accuracy" (:mod:`.readings`) and the HTML
report's landing page (:mod:`.landing`)."""
