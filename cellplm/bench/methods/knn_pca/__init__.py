"""Method knn_pca: method.yaml (its metadata) and method.py (its Annotator)."""
