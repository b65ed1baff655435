"""Method scdiff: method.yaml (its metadata), method.py (its Annotator), model.py, diffusion.py, classifier.py."""
