"""AutoDistiller: recommend a KD pipeline for a new dataset from a meta-dataset of past runs.

A gradient-boosting regressor (scikit-learn ``HistGradientBoostingRegressor``, which takes missing values as they
are) is fitted on the meta-dataset (:mod:`distiller_nlp.autodistiller.metadataset`; by default the one shipped with the package)
to predict a run's score ratio from (dataset meta-features, teacher and student sizes, pipeline). For a new dataset
it predicts the ratio of every candidate pipeline of the search space (:mod:`distiller_nlp.autodistiller.pipeline_space`; the default
logit-KD pipeline always among them), prints the top-k and writes ``DIR/recommended.yaml`` (a recipe
``distiller-nlp run`` accepts) and ``DIR/candidates.csv``. ``verify=True`` then runs the top-k and the default
pipeline on the dataset (teacher fine-tuned first when it has no classifier) and writes ``DIR/verify.csv``.

When the meta-dataset holds too little near the new dataset — fewer than ``MIN_NEAR_DATASETS`` datasets within
``NEAR_DISTANCE`` (root-mean-square z-score distance of the meta-features, z-scored over the meta-dataset's
datasets) or fewer than ``MIN_RECORDS`` records — the model's ranking is not trusted: ``recommend`` says so and
recommends the documented rules of :func:`rule_pipeline` instead (the candidates are still ranked and written).

Every record of a meta-dataset was made with a teacher fine-tuned for its task. When ``recommend`` is given a teacher
without a classifier for the new task (the packaged MiniLM, say), its sentence-embedding summary (``mf_emb_*``) is
not comparable with the records' (fine-tuning reshapes the embedding space: the effective rank of the BBC headlines'
embeddings is 0.28 from the packaged MiniLM and 0.01 from the fine-tuned one), and its dev score and entropy do not
exist: those features are left out of the distance, and the regressor is fitted without every feature the new
dataset lacks (:meth:`RatioModel.fit`'s ``context``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Optional

import numpy as np

from distiller_nlp.autodistiller.metafeatures import META_FEATURE_NAMES
from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

MIN_RECORDS = 40
MIN_NEAR_DATASETS = 2
NEAR_DISTANCE = 2.0
#: A feature counts at most this many spreads in the distance: one the meta-datasets share exactly (0 truncated
#: examples on every BBC headline set) would otherwise put any other value thousands of spreads away.
MAX_FEATURE_Z = 10.0
#: The teacher's sentence-embedding summary: comparable only between teachers fine-tuned for their task.
EMBEDDING_FEATURES = tuple(n for n in META_FEATURE_NAMES if n.startswith("mf_emb_"))


# ------------------------------------------------------------------------------------------------ features

def encode_pipeline(params: dict) -> dict:
    """Numeric features of a pipeline: augmentation stages by position (Distiller's encoding: 0 = unused), one-hot
    losses and mapping, weights, temperature, log10 learning rate; NaN where a parameter is inactive."""
    from distiller_nlp.augment import AUGMENTERS
    from distiller_nlp.core.losses import list_losses, loss_kind, prediction_losses
    from distiller_nlp.kd.mapping import MAPPING_STRATEGIES

    aug = params.get("augment", "none")
    stages = [] if aug in (None, "none") else str(aug).split("+")
    f: dict = {f"p_aug_{s}": float(stages.index(s) + 1) if s in stages else 0.0 for s in AUGMENTERS.names()}
    f["p_aug_n"] = float(len(stages))
    f["p_aug_p"] = float(params.get("aug_p", 0.0)) if stages else 0.0
    f["p_mixup"] = float(bool(params.get("mixup", False)))
    pl = params.get("pred_loss", "kd")
    for name in [*prediction_losses(), "none"]:
        f[f"p_pred_{name}"] = float(pl == name)
    f["p_temperature"] = float(params["temperature"]) if "temperature" in params else float("nan")
    f["p_kd_weight"] = float(params.get("kd_weight", 1.0)) if pl != "none" else 0.0
    f["p_hard_label_weight"] = float(params.get("hard_label_weight", 0.0))
    il = params.get("inter_loss", "none")
    for name in ["none"] + [n for n in list_losses() if loss_kind(n) == "hidden"]:
        f[f"p_inter_{name}"] = float(il == name)
    f["p_mi_alpha"] = float(params["mi_alpha"]) if "mi_alpha" in params else float("nan")
    m = params.get("mapping", "none")
    for name in [*MAPPING_STRATEGIES.names(), "explicit"]:
        f[f"p_map_{name}"] = float(m == name)
    f["p_inter_weight"] = float(params.get("inter_weight", 1.0)) if il != "none" else 0.0
    f["p_log_lr"] = math.log10(float(params["lr"])) if params.get("lr") else float("nan")
    return f


def _log10(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return math.log10(v) if v > 0 else float("nan")


def context_features(row: dict) -> dict:
    """Dataset meta-features plus teacher/student descriptors of a record (or of a new dataset's context)."""
    from distiller_nlp.autodistiller.metafeatures import META_FEATURE_NAMES

    f = {k: float(row.get(k, float("nan"))) for k in META_FEATURE_NAMES}
    f["t_log_params"] = _log10(row.get("teacher_params"))
    f["s_log_params"] = _log10(row.get("student_params"))
    f["s_layers"] = float(row.get("student_layers", float("nan")))
    f["s_hidden"] = float(row.get("student_hidden", float("nan")))
    tf, sf = row.get("teacher_flops"), row.get("student_flops")
    f["flops_ratio"] = float(sf) / float(tf) if tf and sf and float(tf) > 0 else float("nan")
    f["ratio_is_difference"] = float(row.get("ratio_kind") == "difference")
    return f


def feature_matrix(meta, pipelines: Optional[list] = None):
    """``(X, columns)`` for meta-dataset rows (their own pipelines) — or, with ``pipelines``, the first row's context
    crossed with every pipeline (the candidates of a new dataset)."""
    import pandas as pd

    rows = meta.to_dict("records") if hasattr(meta, "to_dict") else list(meta)
    if pipelines is None:
        feats = [{**context_features(r), **encode_pipeline(json.loads(r["pipeline"]))} for r in rows]
    else:
        ctx = context_features(rows[0])
        feats = [{**ctx, **encode_pipeline(p)} for p in pipelines]
    X = pd.DataFrame(feats)
    return X.to_numpy(dtype=float), list(X.columns)


class RatioModel:
    """The AutoDistiller regressor: score ratio from (context, pipeline) features."""

    def __init__(self, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                                   min_samples_leaf=5, l2_regularization=1.0, random_state=seed)
        self.columns: list[str] = []

    def fit(self, meta, context: Optional[dict] = None) -> "RatioModel":
        """Fit on ``meta``'s records; with ``context`` (the dataset to predict for), without the features it lacks:
        a split on a feature the new dataset does not have would send it down an arbitrary branch."""
        meta = meta[np.isfinite(meta["score_ratio"].astype(float))]
        if len(meta) < 2:
            raise DistillerError("the meta-dataset has fewer than 2 records with a score ratio: nothing to learn")
        X, columns = feature_matrix(meta)
        keep = np.isfinite(X).any(axis=0)  # a feature missing everywhere carries nothing (and trips the binner)
        if context is not None:
            have = context_features(context)
            keep &= np.array([c not in have or math.isfinite(have[c]) for c in columns])
        self.columns = [c for c, k in zip(columns, keep) if k]
        self.model.fit(X[:, keep], meta["score_ratio"].astype(float).to_numpy())
        return self

    def predict(self, context: dict, pipelines: list) -> np.ndarray:
        """Predicted score ratios of ``pipelines`` in the dataset ``context``."""
        import pandas as pd

        X, cols = feature_matrix([context], pipelines)
        X = pd.DataFrame(X, columns=cols).reindex(columns=self.columns).to_numpy(dtype=float)
        return self.model.predict(X)


# ------------------------------------------------------------------------------------------------ nearness

def dataset_distances(meta, context: dict) -> list[tuple[str, float]]:
    """RMS z-score distance of ``context``'s meta-features to every dataset of ``meta`` (z-scored over the
    datasets, each feature's |z| capped at ``MAX_FEATURE_Z``, features missing on either side skipped), nearest
    first."""
    cols = [c for c in META_FEATURE_NAMES if c in meta.columns]
    per = meta.groupby("dataset")[cols].mean(numeric_only=True)
    mu, sd = per.mean(), per.std(ddof=0)
    # a feature (nearly) constant across the datasets: scale by 5 % of its size instead of a vanishing spread
    sd = np.maximum(sd, np.maximum(0.05 * mu.abs(), 1e-6))
    x = np.array([float(context.get(c, float("nan"))) for c in cols])
    out = []
    for name, row in per.iterrows():
        z = np.clip((row.to_numpy(dtype=float) - x) / sd.to_numpy(dtype=float), -MAX_FEATURE_Z, MAX_FEATURE_Z)
        ok = np.isfinite(z)  # NaN on either side (or a feature no dataset has) stays NaN through the clip
        out.append((str(name), float(np.sqrt(np.mean(z[ok] ** 2))) if ok.any() else float("inf")))
    return sorted(out, key=lambda t: t[1])


def rule_pipeline(context: dict, available_stages: list, base_params: dict) -> tuple[dict, str]:
    """The documented fallback rules (Distiller's findings, seeds_nlp.md §A.7), as a pipeline and its reason:

    - intermediate objective MI-α with α = 0.9 on a ``skip`` mapping (the best on 6 of 8 GLUE tasks; MI-α held
      the per-task maximum on all 8); ``emd`` for training sets of ≥ 100k examples (MNLI, QQP);
    - prediction loss MSE on logits (``logits_mse``) for regression and ≥ 50k examples, else soft cross-entropy;
    - text augmentation for small training sets (< 10k examples: ``random`` then ``contextual`` where a masked-LM
      is available, aug_p 0.3) — "data augmentation gives a large boost for small training sets" — none otherwise;
    - no MixUp (it did not help MNLI/QQP, and lost to no augmentation on this project's tweets);
    - temperature, weights and learning rate of the base recipe.
    """
    n = float(context.get("mf_n_train", float("nan")))
    regression = bool(context.get("mf_is_regression", 0.0))
    p = dict(base_params)
    small = math.isfinite(n) and n < 10_000
    stages = [s for s in (["random", "contextual"] if small else []) if s in available_stages]
    p["augment"] = "+".join(stages) if stages else "none"
    if stages:
        p["aug_p"] = 0.3
    else:
        p.pop("aug_p", None)
    p["mixup"] = False
    p["pred_loss"] = "logits_mse" if regression or (math.isfinite(n) and n >= 50_000) else "soft_ce"
    p.setdefault("temperature", 1.0)
    p.setdefault("kd_weight", 1.0)
    p["inter_loss"], p["mi_alpha"] = "mi_alpha", 0.9
    p["mapping"] = "emd" if math.isfinite(n) and n >= 100_000 else "skip"
    p.setdefault("inter_weight", 1.0)
    why = (f"{'small' if small else 'large'} training set ({int(n) if math.isfinite(n) else '?'} examples)"
           f"{', regression' if regression else ''}")
    return p, why


# ------------------------------------------------------------------------------------------------ recommend

def available_stages(cfg) -> list:
    """The augmentation stages this recipe can run here (a stage whose model is missing offline is left out)."""
    from distiller_nlp.augment import build_augmenter, list_augmenters

    ok = []
    for name in list_augmenters():
        try:
            build_augmenter(name, 0.3, cfg.augment.params.get(name))
            ok.append(name)
        except DistillerError as exc:
            logger.debug("augmentation stage %s unavailable: %s", name, exc)
    return ok


def new_dataset_context(cfg) -> dict:
    """Meta-features and model descriptors of the recipe's dataset, teacher and student (no training)."""
    from distiller_nlp.autodistiller.metadataset import cached_meta_features, ratio_kind
    from distiller_nlp.kd.recipe import load_finetuned_teacher
    from distiller_nlp.models import (student_config, describe_model, load_backbone_for_finetune, load_tokenizer,
                                      parse_student_shape, resolve_model_path)
    from distiller_nlp.tasks import load_data_config

    d = cfg.data
    ds, task = load_data_config(d, seed=cfg.train.seed)
    path = resolve_model_path(cfg.teacher or "minilm")
    teacher = load_finetuned_teacher(path, task, cfg.trust_remote_code)  # loaded once
    finetuned = teacher is not None
    if teacher is None:  # only its sentence embeddings are used
        teacher = load_backbone_for_finetune(path, task, trust_remote_code=cfg.trust_remote_code)
    teacher.eval()
    tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    feats = cached_meta_features(ds["train"], task, tok, teacher, path,
                                 eval_set=ds[task.eval_splits[0]] if finetuned else None, teacher_finetuned=finetuned)
    t_info = describe_model(teacher)
    if cfg.student:
        from transformers import AutoConfig

        s_info = describe_model(AutoConfig.from_pretrained(resolve_model_path(cfg.student)))
    else:
        s_info = describe_model(student_config(teacher.config, parse_student_shape(cfg.student_shape), task))
    ctx = dict(feats)
    if not finetuned:  # not comparable with the records' fine-tuned teachers (module docstring)
        ctx.update({k: float("nan") for k in EMBEDDING_FEATURES})
    for who, info in (("teacher", t_info), ("student", s_info)):
        for k in ("layers", "hidden", "heads", "params"):
            ctx[f"{who}_{k}"] = info.get(k)
        ctx[f"{who}_flops"] = info.get("encoder_flops")
    ctx["ratio_kind"] = ratio_kind(task.main_metric, task.is_regression)
    return {"context": ctx, "task": task, "teacher_finetuned": finetuned, "teacher_path": path}


def rank_pipelines(meta, context: dict, candidates: list, seed: int = 0) -> np.ndarray:
    """Predicted score ratios of ``candidates`` in ``context`` by a model fitted on ``meta``."""
    return RatioModel(seed=seed).fit(meta, context=context).predict(context, candidates)


def recommend(cfg, output_dir: str, top_k: int = 5, verify: bool = False, meta_dataset: Optional[str] = None,
              space: Optional[str] = None, n_candidates: int = 300, seed: int = 0, overwrite: bool = False,
              resume: bool = False, verify_seeds: int = 1) -> dict:
    """Recommend a KD pipeline for ``cfg``'s dataset, teacher and student (see the module docstring).

    ``cfg``: a :class:`~distiller_nlp.config.DistillConfig` holding the data, teacher (default the packaged MiniLM),
    student and training settings; its own pipeline is ignored except for the parameters the space leaves out.
    Returns a summary (also ``DIR/summary.json``).
    """
    import pandas as pd

    from distiller_nlp.autodistiller.metadataset import load_meta_dataset
    from distiller_nlp.autodistiller.pipeline_space import (apply_params, default_pipeline, describe_pipeline,
                                                            load_space, pipeline_key)
    from distiller_nlp.core.config import dump_yaml
    from distiller_nlp.core.rundir import check_output_dir, create_output_dir, write_json_atomic

    if top_k <= 0:
        raise DistillerError(f"--top-k must be positive, got {top_k}")
    check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    meta = load_meta_dataset(meta_dataset)
    sp = load_space(space)
    cfg.teacher = cfg.teacher or "minilm"
    info = new_dataset_context(cfg)
    ctx, task = info["context"], info["task"]
    if not info["teacher_finetuned"]:
        print(f"[recommend] the teacher {cfg.teacher} has no classifier for {task.name}: its embedding summary and "
              "dev score are left out of the comparison (the meta-dataset's teachers were fine-tuned; pass "
              "--teacher a fine-tuned one to use them)")
    stages = available_stages(cfg)
    default = default_pipeline(cfg)
    drawn = sp.candidates(4 * n_candidates, seed=seed, include=[default])
    usable = [c for c in drawn if all(s in stages for s in c.get("augment", "none").split("+") if s != "none")]
    usable = usable[:n_candidates]
    missing = sorted({s for c in drawn for s in c.get("augment", "none").split("+")} - set(stages) - {"none"})
    if missing:
        print(f"[recommend] pipelines with {', '.join(missing)} augmentation are left out: not available here "
              "(e.g. a contextual stage needs augment.params.contextual.model)")
    pred = rank_pipelines(meta, ctx, usable, seed=seed)
    order = np.argsort(-pred, kind="stable")
    ranked = [usable[i] for i in order]
    dists = dataset_distances(meta, ctx)
    near = [(n, d) for n, d in dists if d <= NEAR_DISTANCE]
    n_records = int(np.isfinite(meta["score_ratio"].astype(float)).sum())
    trusted = len(near) >= MIN_NEAR_DATASETS and n_records >= MIN_RECORDS
    if trusted:
        top = ranked[:top_k]
        reason = (f"model fitted on {n_records} runs of {meta['dataset'].nunique()} datasets; nearest: "
                  + ", ".join(f"{n} ({d:.2f})" for n, d in near[:3]))
    else:
        rule, why = rule_pipeline(ctx, stages, default)
        top = [rule] + [p for p in ranked if pipeline_key(p) != pipeline_key(rule)][:top_k - 1]
        nearest = f"nearest {dists[0][0]} at {dists[0][1]:.2f}" if dists else "no datasets"
        reason = (f"too little data near this dataset ({len(near)} datasets within distance {NEAR_DISTANCE}, "
                  f"{nearest}; {n_records} records): falling back to the documented rules ({why})")
        print(f"[recommend] {reason}")
    create_output_dir(output_dir, overwrite=overwrite)
    rows = []
    for rank, i in enumerate(order, start=1):
        p = usable[i]
        rows.append({"rank": rank, "pipeline_id": pipeline_key(p), "predicted_ratio": round(float(pred[i]), 5),
                     "is_default": pipeline_key(p) == pipeline_key(default), "pipeline": describe_pipeline(p),
                     "params": json.dumps(p, sort_keys=True)})
    pd.DataFrame(rows).to_csv(os.path.join(output_dir, "candidates.csv"), index=False)
    rec_cfg = apply_params(cfg, top[0])
    rec_cfg.output_dir = ""
    dump_yaml(rec_cfg, os.path.join(output_dir, "recommended.yaml"))
    pred_of = {pipeline_key(usable[i]): float(pred[i]) for i in range(len(usable))}
    print(f"[recommend] {task.name}: top {len(top)} of {len(usable)} candidate pipelines "
          f"({'predicted ' + ('difference' if ctx['ratio_kind'] == 'difference' else 'ratio') + ' to the teacher'})")
    for r, p in enumerate(top, start=1):
        v = pred_of.get(pipeline_key(p))
        print(f"  {r}. {'' if v is None else f'{v:.4f}  '}{describe_pipeline(p)}")
    print(f"  default (logit KD only): {pred_of[pipeline_key(default)]:.4f}")
    summary = {"task": task.name, "trusted": trusted, "reason": reason, "top": top,
               "predicted": [pred_of.get(pipeline_key(p)) for p in top],
               "default": default, "default_predicted": pred_of[pipeline_key(default)],
               "recommended_recipe": os.path.join(output_dir, "recommended.yaml"),
               "candidates": os.path.join(output_dir, "candidates.csv"), "meta_records": n_records,
               "nearest_datasets": dists[:5]}
    if verify:
        summary["verify"] = verify_pipelines(cfg, top, default, output_dir, info, seeds=verify_seeds,
                                             resume=resume)
    write_json_atomic(os.path.join(output_dir, "summary.json"), summary)
    return summary


def verify_pipelines(cfg, top: list, default: dict, output_dir: str, info: dict, seeds: int = 1,
                     resume: bool = False) -> list:
    """Run the ``top`` pipelines and the default on the dataset (``seeds`` seeds each) and report their actual
    dev scores (``DIR/verify.csv``); the teacher is fine-tuned once first when it has no classifier."""

    import pandas as pd

    from distiller_nlp.autodistiller.metadataset import meta_recorders
    from distiller_nlp.autodistiller.pipeline_space import apply_params, describe_pipeline, pipeline_key
    from distiller_nlp.config import FinetuneConfig
    from distiller_nlp.kd.distillation import distill
    from distiller_nlp.kd.finetune import finetune_teacher
    from distiller_nlp.kd.recipe import run_stage

    vdir = os.path.join(output_dir, "verify")
    teacher = cfg.teacher
    if not info["teacher_finetuned"]:
        t_dir = os.path.join(vdir, "teacher")
        print(f"[verify] fine-tune {cfg.teacher} on {info['task'].name} -> {t_dir}")
        t_cfg = FinetuneConfig(model=cfg.teacher, output_dir=t_dir, data=cfg.data,
                               train=cfg.teacher_finetune.train, trust_remote_code=cfg.trust_remote_code)
        run_stage(finetune_teacher, t_dir, True, False, t_cfg)
        teacher = t_dir
    main = info["task"].main_metric
    runs = [("default", default)] + [(f"top{r}", p) for r, p in enumerate(top, start=1)]
    rows = []
    for label, p in runs:
        for s in range(seeds):
            run_cfg = apply_params(cfg, p)
            run_cfg.teacher = teacher
            run_cfg.train.seed = cfg.train.seed + s
            run_cfg.output_dir = os.path.join(vdir, f"{label}-{pipeline_key(p)}-seed{run_cfg.train.seed}")
            print(f"[verify] {label} (seed {run_cfg.train.seed}): {describe_pipeline(p)}")
            metrics, secs = run_stage(distill, run_cfg.output_dir, True, False, run_cfg,
                                      on_finish=meta_recorders(run_cfg, "recommend"))
            rows.append({"run": label, "seed": run_cfg.train.seed, "pipeline_id": pipeline_key(p),
                         "pipeline": describe_pipeline(p), f"eval_{main}": metrics.get(f"eval_{main}"),
                         f"test_{main}": metrics.get(f"test_{main}"), "seconds": round(secs, 1)})
    df = pd.DataFrame(rows)
    df.to_csv(os.path.join(output_dir, "verify.csv"), index=False)
    means = df.groupby("run", sort=False)[f"eval_{main}"].mean()
    print(f"[verify] dev {main} (mean over {seeds} seed{'s' if seeds > 1 else ''}):")
    for label, v in means.items():
        print(f"  {label:8s} {v:.4f}")
    return rows
