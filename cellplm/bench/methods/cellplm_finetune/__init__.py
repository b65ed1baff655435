"""Method cellplm_finetune: method.yaml (its metadata) and method.py (its Annotator)."""
