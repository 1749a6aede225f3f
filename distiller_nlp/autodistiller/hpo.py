"""``distiller-nlp hpo``: Optuna over the Distiller pipeline space, with pruning, shared storage and resume.

Each trial draws a pipeline from the space (:mod:`distiller_nlp.autodistiller.pipeline_space`, default the shipped
``spaces/distiller.yaml``),
applies it to the base recipe and runs :func:`~distiller_nlp.kd.distillation.distill` into ``DIR/trials/trial-NNNN``,
reporting the dev score after every epoch to the pruner (successive halving by default, as Distiller's ASHA;
``hyperband``, ``median`` or ``none``). A trial that raises is marked failed (its error kept as the trial's
``error`` attribute) and the study goes on.

Storage defaults to ``sqlite:///DIR/hpo.db``; any Optuna RDB URL works (``postgresql+psycopg://user:pw@host/db``),
so several workers on several machines share one study — each worker with its own output directory, the same
``--storage`` and ``--study``. That is also how ``hpo`` uses several GPUs of one machine (one worker per GPU with
``CUDA_VISIBLE_DEVICES``): under ``accelerate launch`` / ``torchrun`` it refuses to start, since every rank would run
a study of its own under one worker id. ``--trials N`` is the study's target: a worker stops once the study holds N finished
(complete, pruned or failed) trials, so a rerun with ``--resume`` continues where the study stopped; trials this
worker left running when it was interrupted are marked failed first.

Outputs in ``DIR``: ``best_recipe.yaml`` (a recipe ``distiller-nlp run`` accepts), ``trials.csv``,
``summary.json``, ``optimization_history.png`` and ``param_importances.png`` (when at least two trials completed).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
import zlib
from typing import Optional

from distiller_nlp.core.distributed import refuse_several_processes
from distiller_nlp.core.errors import RunInterrupted

from distiller_nlp.autodistiller.metadataset import meta_recorders
from distiller_nlp.core.engine.callbacks import Callback
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

logger = logging.getLogger(__name__)



def _redact(url: str) -> str:
    from distiller_nlp.core.card import redact  # the one redaction rule (passwords in URLs, token=... values)

    return redact(url)


def make_storage(url: str):
    """An Optuna RDB storage for ``url`` (with heartbeats, so trials of a crashed worker are failed); an
    unreachable or malformed URL is a :class:`DistillerError` naming it (password hidden)."""
    import time

    import optuna

    last = None
    for attempt in range(4):
        # workers started together race to create the schema (a unique-key violation for the loser): retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180,
                                                  engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:  # sqlalchemy / driver errors of many kinds
            last = exc
            if "could not translate host name" in str(exc) or "No module named" in str(exc):
                break
            time.sleep(0.5 + attempt)
    msg = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise DistillerError(f"storage {_redact(url)} cannot be reached: {msg}") from None


#: Optuna pruners by ``--pruner`` name: ``name -> (max_epochs) -> optuna.pruners.BasePruner``.
PRUNERS: Registry = Registry("pruner")


@PRUNERS.register("successive_halving")
def _successive_halving(max_epochs: int):
    """Asynchronous successive halving (Distiller's ASHA). Rungs at epochs 1, rf, rf², ...: Distiller used rf 3 over
    many epochs; short trials need rf 2 so that a rung falls before the last epoch (rf 3 on 3 epochs would only judge
    after epoch 1 and at the end)."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3 if max_epochs >= 9 else 2)


@PRUNERS.register("hyperband")
def _hyperband(max_epochs: int):
    """Hyperband over 1..max_epochs epochs, reduction factor 3."""
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs), reduction_factor=3)


@PRUNERS.register("median")
def _median(max_epochs: int):
    """Prune a trial below the median of earlier trials at the same epoch (after 2 trials)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


@PRUNERS.register("none")
def _no_pruning(max_epochs: int):
    """Never prune."""
    import optuna

    return optuna.pruners.NopPruner()


def make_pruner(name: str, max_epochs: int):
    """The Optuna pruner registered as ``name`` for trials of ``max_epochs`` epochs."""
    return PRUNERS.get(name)(max_epochs)


def _check_owner(storage, name: str, dataset: str, url: str) -> None:
    """A study of another dataset under this name is an error (its trials would mix with ours)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    owner = storage.get_study_user_attrs(study_id).get("dataset")
    if owner is not None and owner != dataset:
        raise DistillerError(f"study '{name}' in {_redact(url)} belongs to dataset '{owner}', not '{dataset}': "
                             "choose another --study")


def _check_base(cfg) -> object:
    """Validate the base recipe once (data, teacher, pipeline) so a bad base fails before any trial."""
    from distiller_nlp.kd.recipe import teacher_has_classifier
    from distiller_nlp.kd.setup import check_pipeline
    from distiller_nlp.models import resolve_model_path
    from distiller_nlp.tasks import load_data_config

    if not cfg.teacher:
        raise DistillerError("--teacher is required (a teacher fine-tuned on the task)")
    check_pipeline(cfg, "the base recipe")
    d = cfg.data
    _, task = load_data_config(d, seed=cfg.train.seed)
    path = resolve_model_path(cfg.teacher)
    if not teacher_has_classifier(path, task, cfg.trust_remote_code):
        raise DistillerError(f"teacher {cfg.teacher} has no classifier for {task.name}: fine-tune it first "
                             "(distiller-nlp finetune-teacher) or give a fine-tuned teacher")
    return task


def _save_plots(study, out_dir: str) -> list[str]:
    """Optimisation history and parameter importances as PNG (what could be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    plots = [("optimization_history.png", optuna.visualization.matplotlib.plot_optimization_history)]
    if len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= 2:
        plots.append(("param_importances.png", optuna.visualization.matplotlib.plot_param_importances))
    written = []
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
            try:
                ax = plot(study)
            except Exception as exc:  # no finished trial yet, or no parameter varied across them
                logger.info("no %s: %s", name, exc)
                continue
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        path = os.path.join(out_dir, name)
        ax.figure.savefig(path, dpi=110)
        plt.close(ax.figure)
        written.append(path)
    return written


class OptunaReporter(Callback):
    """Engine callback: report the dev score to an Optuna trial after every evaluation (step = epoch) and prune the
    trial when the pruner says so (``optuna.TrialPruned`` ends training on every process)."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric

    def on_evaluate(self, engine, metrics: dict) -> None:
        """Report the dev score; raise ``optuna.TrialPruned`` when the pruner stops the trial."""
        import optuna

        value = metrics.get(f"eval_{self.metric}")
        if value is None:
            return
        epoch = int(engine.state["epoch"])
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.metric} {value:.4f})")


def run_hpo(cfg, trials: int, space: Optional[str] = None, storage: Optional[str] = None,
            study_name: Optional[str] = None, pruner: str = "successive_halving", resume: bool = False,
            overwrite: bool = False, seed: int = 0, enqueue: Optional[list] = None) -> dict:
    """Search the pipeline space for ``cfg`` (the base :class:`~distiller_nlp.config.DistillConfig`, whose
    ``output_dir`` is this worker's directory); see the module docstring. ``enqueue``: pipelines (dicts of space
    parameters) to evaluate first, e.g. the recipe's own as a reference point. Returns the summary (also
    ``DIR/summary.json``)."""
    import optuna

    from distiller_nlp.autodistiller.metadataset import check_meta_path, dataset_name
    from distiller_nlp.autodistiller.pipeline_space import apply_params, describe_pipeline, load_space
    from distiller_nlp.core.config import dump_yaml
    from distiller_nlp.core.rundir import check_output_dir, create_output_dir
    from distiller_nlp.kd.distillation import distill

    refuse_several_processes(
        "hpo", "Optuna trials are whole runs, so scale out with workers instead: start several `distiller-nlp hpo` "
        "processes (one per GPU, e.g. CUDA_VISIBLE_DEVICES=0 and =1, or one per machine), each with its own "
        "--output-dir and the same --storage and --study")
    if trials <= 0:
        raise DistillerError(f"--trials must be positive, got {trials}")
    out = cfg.output_dir
    if not out:
        raise DistillerError("--output-dir is required")
    sp = load_space(space)
    pr = make_pruner(pruner, int(round(cfg.train.planned_epochs)))
    if cfg.stages:
        raise DistillerError("hpo searches one distillation stage: the base recipe must not have 'stages'")
    if cfg.general:
        raise DistillerError("hpo searches task distillation (a dev score to maximise): the base recipe has "
                             "general: true")
    check_output_dir(out, resume=resume, overwrite=overwrite)
    if cfg.meta_dataset:
        check_meta_path(cfg.meta_dataset)
    task = _check_base(cfg)
    url = storage or f"sqlite:///{os.path.abspath(os.path.join(out, 'hpo.db'))}"
    dataset = dataset_name(cfg)
    name = study_name or f"distiller-{dataset}"
    if storage is not None:
        # an unreachable storage or a study of another dataset fails before the output directory is touched
        st = make_storage(url)
        _check_owner(st, name, dataset, url)
    create_output_dir(out, overwrite=overwrite)
    if storage is None:
        st = make_storage(url)
        _check_owner(st, name, dataset, url)
    worker = f"{socket.gethostname()}:{os.path.abspath(out)}"
    sampler = optuna.samplers.TPESampler(seed=seed + zlib.crc32(worker.encode()) % 100_000)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=st, direction="maximize", sampler=sampler, pruner=pr,
                                load_if_exists=True)
    if study.user_attrs.get("dataset") is None:
        study.set_user_attr("dataset", dataset)
        study.set_user_attr("metric", task.main_metric)
        study.set_user_attr("space", json.dumps(sp.to_dict()))
    dump_yaml(cfg, os.path.join(out, "base_recipe.yaml"))

    if enqueue and not study.trials:
        for params in enqueue:
            fit = {k: v for k, v in params.items() if k in sp.params and sp.params[k].contains(v)}
            for k in sorted(set(params) & set(sp.params) - set(fit)):
                if not sp.params[k].fixed:
                    print(f"[hpo] first trial: {k}={params[k]} is outside the space; the sampler picks it")
            study.enqueue_trial(fit, skip_if_exists=True)
    running = optuna.trial.TrialState.RUNNING
    for t in study.get_trials(deepcopy=False, states=(running,)):
        if t.user_attrs.get("worker") == worker:  # this worker was interrupted during it
            st.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            logger.info("trial %d was interrupted: marked failed", t.number)

    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                       optuna.trial.TrialState.FAIL)
    main = task.main_metric
    interrupted: list = []

    def objective(trial):
        params = sp.suggest(trial)
        trial.set_user_attr("pipeline", params)
        trial.set_user_attr("worker", worker)
        t_cfg = apply_params(cfg, params)
        t_cfg.output_dir = os.path.join(out, "trials", f"trial-{trial.number:04d}")
        print(f"[hpo] trial {trial.number}: {describe_pipeline(params)}")

        try:
            metrics = distill(t_cfg, overwrite=True, callbacks=[OptunaReporter(trial, main)],
                              on_finish=meta_recorders(t_cfg, "hpo"))
        except optuna.TrialPruned:
            print(f"[hpo] trial {trial.number} pruned")
            raise
        except RunInterrupted as exc:  # SIGTERM/SIGINT: stop the study; a resumed hpo reruns this pipeline first
            interrupted.append(exc)
            trial.set_user_attr("error", "interrupted")
            study.enqueue_trial(params, skip_if_exists=False)
            trial.study.stop()
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            print(f"[hpo] trial {trial.number} failed: {exc}")
            raise
        value = float(metrics[f"eval_{main}"])
        print(f"[hpo] trial {trial.number}: {main} {value:.4f}")
        return value

    def n_finished() -> int:  # an interrupted trial does not use up the budget: it is rerun
        return sum(t.user_attrs.get("error") != "interrupted"
                   for t in study.get_trials(deepcopy=False, states=finished_states))

    def stop_when_done(study_, trial_) -> None:
        if n_finished() >= trials:
            study_.stop()

    remaining = trials - n_finished()
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=(Exception,), callbacks=[stop_when_done],
                       gc_after_trial=True)
        if interrupted:  # optuna caught it (catch=Exception) and marked the trial failed; the user asked to stop
            raise interrupted[0]
    else:
        print(f"[hpo] study '{name}' already holds {n_finished()} finished trials (target {trials})")
    return _summarise(study, cfg, out, url, name, main)


def _summarise(study, cfg, out: str, url: str, name: str, main: str) -> dict:
    import optuna

    from distiller_nlp.autodistiller.pipeline_space import apply_params, describe_pipeline
    from distiller_nlp.core.config import dump_yaml
    from distiller_nlp.core.rundir import write_json_atomic

    states = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for t in study.trials:
        states[t.state.name.lower()] += 1
    summary: dict = {"study": name, "storage": _redact(url), "metric": main, "trials": states}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        params = best.user_attrs.get("pipeline", best.params)
        best_cfg = apply_params(cfg, params)
        best_cfg.output_dir = ""
        dump_yaml(best_cfg, os.path.join(out, "best_recipe.yaml"))
        summary.update({"best_trial": best.number, "best_value": best.value, "best_pipeline": params,
                        "best_pipeline_text": describe_pipeline(params),
                        "best_recipe": os.path.join(out, "best_recipe.yaml")})
    try:
        df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
        df.to_csv(os.path.join(out, "trials.csv"), index=False)
    except Exception as exc:  # pragma: no cover - an empty study
        logger.info("no trials table: %s", exc)
    summary["plots"] = _save_plots(study, out)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    return summary
