"""Method cellplm_zeroshot: method.yaml (its metadata) and method.py (its Annotator)."""
