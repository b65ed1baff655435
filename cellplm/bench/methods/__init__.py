"""Annotation methods: control methods, classic baselines, CellTypist and scANVI.

Each method is an :class:`~.base.Annotator`; :data:`REGISTRY` maps the method ids used in the config to
their classes, so that a workflow script (or a user) can run any of them with :func:`.base.run`.
"""

from .base import Annotator, RunIds, RunRecord, run  # noqa: F401


def registry() -> dict:
    """Method id -> Annotator class. Imported lazily: heavy methods pull in their own packages."""
    from .classic import KNNOnPCA, LogisticRegressionHVG
    from .controls import MajorityClass, RandomLabels, TrueLabels

    reg = {
        "majority_class": MajorityClass,
        "random_labels": RandomLabels,
        "true_labels": TrueLabels,
        "logistic_regression": LogisticRegressionHVG,
        "knn_pca": KNNOnPCA,
    }
    try:
        from .actinn import ACTINN

        reg["actinn"] = ACTINN
    except ImportError:
        pass
    try:
        from .singlecellnet import SingleCellNet

        reg["singlecellnet"] = SingleCellNet
    except ImportError:
        pass
    try:
        from .celltypist_method import CellTypistFromScratch

        reg["celltypist"] = CellTypistFromScratch
    except ImportError:
        pass
    try:
        from .cellplm_methods import CellPLMFinetune, CellPLMZeroShot

        reg["cellplm_finetune"] = CellPLMFinetune
        reg["cellplm_zeroshot"] = CellPLMZeroShot
    except ImportError:
        pass
    try:
        from .scanvi import SCANVIAnnotator

        reg["scanvi"] = SCANVIAnnotator
    except ImportError:
        pass
    try:
        from .scgpt_method import ScGPTAnnotator  # only in .venv-scgpt (scgpt 0.2.4 needs torch 2.3)

        reg["scgpt"] = ScGPTAnnotator
    except ImportError:
        pass
    try:
        from .geneformer import Geneformer  # imports transformers only inside fit

        reg["geneformer"] = Geneformer
    except ImportError:
        pass
    return reg
