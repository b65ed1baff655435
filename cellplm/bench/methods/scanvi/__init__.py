"""Method scanvi: method.yaml (its metadata) and method.py (its Annotator)."""
