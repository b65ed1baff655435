"""Method majority_class: method.yaml (its metadata) and method.py (its Annotator)."""
