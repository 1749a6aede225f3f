"""The one Accelerate engine, in files a newcomer can name from the job:

========================  ====================================================================================
``engine.py``             :class:`Engine` — the training loop (accumulation, clipping, evaluation, best export, resume)
``callbacks.py``          :class:`Callback` — on train begin / step end / evaluate / save / train end
``precision.py``          ``auto | no | bf16 | fp16`` and the Accelerator every command uses
``precision_probe.py``    ``auto`` on a CPU by measurement: the fp32 / bf16 probe of a run's shapes, its cache
``samplers.py``           shuffled, length-grouped and group-keeping batches, deterministic in (seed, epoch)
``optim.py``              AdamW parameter groups and the linear warm-up schedule
``evaluate.py``           every inference loop: predictions of each example once, evaluation without training
``checkpoints.py``        the checkpoint layout and its listing
========================  ====================================================================================
"""

from distiller_nlp.core.engine.callbacks import Callback
from distiller_nlp.core.engine.checkpoints import CHECKPOINT_PREFIX, STATE_FILE, list_checkpoints
from distiller_nlp.core.engine.engine import Engine, EngineResult
from distiller_nlp.core.engine.evaluate import batch_size_of, evaluate_loaders, evaluate_module, predict_loader
from distiller_nlp.core.engine.optim import OPTIMIZERS, linear_warmup_schedule, make_optimizer
from distiller_nlp.core.engine.precision import bf16_is_fast, make_accelerator, resolve_precision
from distiller_nlp.core.engine.precision_probe import ProbeShapes, shapes_from_configs, shapes_from_models
from distiller_nlp.core.engine.samplers import (GroupedBatchSampler, LengthGroupedBatchSampler, example_lengths,
                                                train_loader)

__all__ = ["Engine", "EngineResult", "Callback", "make_accelerator", "resolve_precision", "bf16_is_fast",
           "evaluate_module", "evaluate_loaders", "predict_loader", "batch_size_of", "list_checkpoints",
           "STATE_FILE", "CHECKPOINT_PREFIX", "make_optimizer", "linear_warmup_schedule", "OPTIMIZERS",
           "LengthGroupedBatchSampler", "GroupedBatchSampler", "example_lengths", "train_loader", "ProbeShapes",
           "shapes_from_configs", "shapes_from_models"]
