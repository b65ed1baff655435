"""Method random_labels: method.yaml (its metadata) and method.py (its Annotator)."""
