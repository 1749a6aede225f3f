"""AutoDistiller: search the KD pipeline space and learn which pipeline suits which dataset.

=====================  =============================================================================================
``pipeline_space.py``  the Distiller pipeline search space (one YAML file, ``spaces/distiller.yaml`` shipped)
``hpo.py``             :func:`run_hpo` — Optuna over that space (pruners registry :data:`PRUNERS`, shared storage)
``metafeatures.py``    meta-features of a dataset (sizes, lengths, labels, the teacher's view of it)
``metadataset.py``     the meta-dataset of past runs (records, append, load) and :class:`MetaDatasetRecorder`
``recommender.py``     :func:`recommend` — a regressor on the meta-dataset ranks pipelines for a new dataset
=====================  =============================================================================================

Importing this package is light; the names below load their module on first use.
"""

from distiller_nlp.core.lazy import lazy_exports

_EXPORTS = {
    "run_hpo": "distiller_nlp.autodistiller.hpo",
    "PRUNERS": "distiller_nlp.autodistiller.hpo",
    "recommend": "distiller_nlp.autodistiller.recommender",
    "load_space": "distiller_nlp.autodistiller.pipeline_space",
    "SearchSpace": "distiller_nlp.autodistiller.pipeline_space",
    "compute_meta_features": "distiller_nlp.autodistiller.metafeatures",
    "load_meta_dataset": "distiller_nlp.autodistiller.metadataset",
    "MetaDatasetRecorder": "distiller_nlp.autodistiller.metadataset",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
