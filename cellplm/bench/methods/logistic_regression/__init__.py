"""Method logistic_regression: method.yaml (its metadata) and method.py (its Annotator)."""
