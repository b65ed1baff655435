"""What the two CellPLM fine-tuning methods record about their protocol, in one vocabulary (ours' option names).

``cellplm_finetune`` (this project's re-implementation) and ``cellplm_upstream`` (the authors' pipeline) write
``extra['protocol']`` (the settings below), ``extra['precision']``, ``extra['sentences']`` and ``extra['class_set']``
into their run records, so that the fidelity table (:mod:`cellplm.bench.report.fidelity`) can say whether a pair of
rows is like for like. Standard library only: the report environment imports it without torch.
"""

# Settings compared by the fidelity table: epochs at most, early stopping (epochs after the best validation
# macro-F1), linear warm-up of the main group, learning rate and weight decay of the main group, HVGs, and the
# ReduceLROnPlateau patience. Upstream's names: epochs, es, (30, hard-coded), lr, wd, hvg, patience.
PROTOCOL = ("max_epochs", "patience", "warmup_epochs", "lr", "weight_decay", "n_hvg", "plateau_patience")

# Both methods fit their classifier on the training labels only.
CLASS_SET = (
    "training labels ({n} classes): test labels are hidden by the benchmark's contract (OpenProblems label "
    "projection); upstream's tutorial fits its label encoder on all cells, whose test-only classes would get "
    "an output unit never trained positively"
)
