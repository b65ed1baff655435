"""Library code shared by the workflow scripts and the tests.

Stages, in the order data flows through the workflow:

- :mod:`.download`, :mod:`.sources`: obtain each dataset (remote files, packaged demo data, synthetic data)
- :mod:`.preprocess`, :mod:`.counts`: one canonical count matrix per dataset (genes mapped by :mod:`cellplm.genes`)
- :mod:`.split`: train / test / solution files (OpenProblems contract)
- :mod:`.methods`: one annotator per method and the harness that records every run
- :mod:`.metrics`: scores of one prediction
- :mod:`.aggregate`, :mod:`.plots`: tables and figures for the report
"""
