"""Method cellplm_upstream: method.yaml (its metadata) and method.py (its Annotator, the authors' pipeline)."""
