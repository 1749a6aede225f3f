"""Everything a distillation run needs, loaded and validated before anything is written."""

from __future__ import annotations

import logging

from distiller_nlp.config import DistillConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import list_losses
from distiller_nlp.kd.mapping import MAPPING_STRATEGIES
from distiller_nlp.kd.matches import resolve_matches
from distiller_nlp.kd.module import DistillModule, check_prediction_loss
from distiller_nlp.kd.teacher_cache import collate_teacher_columns

logger = logging.getLogger(__name__)

def check_pipeline(cfg: DistillConfig, source: str = "the recipe") -> None:
    """Validate what can be checked without loading a model: augmentation stages and their ``aug_p`` / checkpoints,
    the prediction loss, the mapping strategy, loss names and schedules (``run`` calls it for every stage before the
    first one starts, so a typo in stage 2 does not surface after an hour of stage 1)."""
    from distiller_nlp.augment import build_augmenter
    from distiller_nlp.config import SCHEDULED
    from distiller_nlp.core.schedules import KINDS

    for name in cfg.augment.stages:
        build_augmenter(name, cfg.augment.aug_p, cfg.augment.params.get(name))
    kd = cfg.kd
    check_prediction_loss(kd.pred_loss, source)
    known = set(list_losses())
    losses = [m.loss for m in kd.intermediate] + ([kd.mapping.loss] if kd.mapping else [])
    for loss in losses:
        if loss not in known:
            raise DistillerError(f"intermediate loss '{loss}' in {source} is not a registered loss")
    if kd.mapping is not None and kd.mapping.strategy not in MAPPING_STRATEGIES:
        raise DistillerError(f"kd.mapping.strategy '{kd.mapping.strategy}' in {source} must be one of "
                             f"{', '.join(MAPPING_STRATEGIES.names())}")
    for name, sch in kd.schedules.items():
        if name not in SCHEDULED or sch.kind not in KINDS:
            raise DistillerError(f"kd.schedules.{name} in {source}: schedules are {', '.join(SCHEDULED)}, kinds "
                                 f"{', '.join(KINDS)}")


def prepare_distillation(cfg: DistillConfig):
    """Load and validate everything a run needs (data, teacher, student, KD config), writing nothing.

    Returns a namespace: ``task``, ``raw`` (normalized splits), ``raw_train`` (the original training split),
    ``teacher``/``teacher_path``/``extra_teachers``, ``tokenizer``, ``tok`` (tokenized splits), ``train_set`` (with
    augmentation), ``evals``, ``student``, ``module`` (:class:`~distiller_nlp.kd.module.DistillModule`),
    ``collate``, ``n_original``, ``online_augment``, ``cache_dtype`` and ``cfg`` itself."""
    from types import SimpleNamespace

    from accelerate.utils import set_seed

    from distiller_nlp.models import (build_student, load_teacher_for_task, load_tokenizer, parse_student_shape,
                                      resolve_model_path)
    from distiller_nlp.tasks import eval_splits, load_data_config, make_collator, tokenize_dataset

    if not cfg.teacher:
        raise DistillerError("--teacher is required (a fine-tuned checkpoint: see `distiller-nlp finetune-teacher`)")
    if cfg.student_init not in ("auto", "teacher", "random"):
        raise DistillerError(f"student_init '{cfg.student_init}' must be auto, teacher or random")
    set_seed(cfg.train.seed)
    if cfg.kd.encoder_layouts:  # module paths of encoder types the capture registry does not know
        from distiller_nlp.core.capture import register_encoder_layout

        if not isinstance(cfg.kd.encoder_layouts, dict):
            raise DistillerError("kd.encoder_layouts must map model types to module paths")
        for model_type, layout in cfg.kd.encoder_layouts.items():
            if not isinstance(layout, dict):
                raise DistillerError(f"kd.encoder_layouts.{model_type} must be a mapping of EncoderLayout fields")
            register_encoder_layout(str(model_type), layout, override=True)
    d = cfg.data
    ds, task = load_data_config(d, seed=cfg.train.seed)
    n_original = len(ds["train"])
    a = cfg.augment
    online = bool(a.stages) and (a.reaug_every > 0 or a.repeated_aug > 1)
    if a.reaug_every < 0 or a.repeated_aug < 1:
        raise DistillerError(f"augment.reaug_every must be >= 0 and augment.repeated_aug >= 1, got {a.reaug_every} "
                             f"and {a.repeated_aug}")
    if (a.reaug_every > 0 or a.repeated_aug > 1) and not a.stages:
        raise DistillerError("augment.reaug_every / augment.repeated_aug need augmentation stages (augment.stages)")
    originals = ds["train"]
    if a.stages and not online:
        import datasets

        from distiller_nlp.augment import augment_dataset

        extra = augment_dataset(ds["train"], a.stages, aug_p=a.aug_p, copies=a.copies, seed=a.seed, params=a.params)
        ds["train"] = datasets.concatenate_datasets([ds["train"], extra])
        logger.info("augmentation %s: %d original + %d augmented training examples", "+".join(a.stages),
                    n_original, len(extra))
    teacher_path = resolve_model_path(cfg.teacher)
    if cfg.general:
        from distiller_nlp.config import resolve_kd_defaults

        kd = resolve_kd_defaults(cfg.kd)
        if (kd.pred_loss != "none" and kd.kd_weight) or kd.hard_label_weight or kd.mixup:
            raise DistillerError("general (task-agnostic) distillation uses intermediate matches only: set "
                                 "kd.pred_loss none, kd.hard_label_weight 0 and kd.mixup false")
        if not kd.intermediate and kd.mapping is None:
            raise DistillerError("general distillation needs intermediate matches (kd.intermediate or kd.mapping)")
        if cfg.teachers:
            raise DistillerError("general distillation takes one teacher")
        from distiller_nlp.models import load_backbone_for_finetune

        # any encoder: its classifier (new or not) is never used
        teacher = load_backbone_for_finetune(teacher_path, task, trust_remote_code=cfg.trust_remote_code).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        teacher = load_teacher_for_task(teacher_path, task, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(teacher_path, trust_remote_code=cfg.trust_remote_code)
    extra_teachers = []
    for name in cfg.teachers:
        path = resolve_model_path(name)
        other_tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
        if other_tok.get_vocab() != tokenizer.get_vocab():
            raise DistillerError(f"teacher {name} uses another vocabulary than {cfg.teacher}: several teachers must "
                                 "share one tokenizer")
        extra_teachers.append(load_teacher_for_task(path, task, trust_remote_code=cfg.trust_remote_code))
    shape = None if cfg.student else parse_student_shape(cfg.student_shape)
    teacher_tokenizer, student_tokenizer = tokenizer, tokenizer
    if cfg.student:
        student_tokenizer = student_own_tokenizer(cfg.student, tokenizer, trust_remote_code=cfg.trust_remote_code)
    cross = student_tokenizer is not teacher_tokenizer
    student = build_student(teacher, shape=shape, student=cfg.student or None, init=cfg.student_init, task=task,
                            seed=cfg.train.seed)
    matches = resolve_matches(cfg.kd, teacher.config, student.config, source="the KD config")
    if cross:
        check_cross_tokenizer(cfg, matches, teacher_tokenizer, student_tokenizer)
    module = DistillModule(student, cfg.kd, matches, teacher.config, is_regression=task.is_regression,
                           general=cfg.general)
    if cfg.kd.mixup and not module.needs_teacher:
        raise DistillerError("kd.mixup needs a KD loss (the teacher labels the mixed examples): set kd.pred_loss")
    if extra_teachers and not module.needs_teacher_logits:
        raise DistillerError("several teachers average their soft targets: set kd.pred_loss and kd.kd_weight")
    # Cross-tokenizer: the data is the student's tokenization plus the teacher's own (teacher_input_ids, ...), each
    # from the same raw text; evaluation splits need the student's only.
    t_tok = teacher_tokenizer if cross and module.needs_teacher else None
    tokenizer = student_tokenizer
    tok = tokenize_dataset(ds, tokenizer, max_length=cfg.train.max_length, teacher_tokenizer=t_tok)
    train_set = tok["train"]
    if online:
        from distiller_nlp.augment import augment_dataset, build_augmenter
        from distiller_nlp.augment.online import AugmentedTrainSet, round_seed

        for name in a.stages:  # validate stages and aug_p now, not at the first epoch
            build_augmenter(name, a.aug_p, a.params.get(name))
        copies = a.repeated_aug - 1 if a.repeated_aug > 1 else a.copies

        def make_round(r: int):
            aug = augment_dataset(originals, a.stages, aug_p=a.aug_p, copies=copies, seed=round_seed(a.seed, r),
                                  params=a.params)
            return tokenize_dataset(aug, tokenizer, max_length=cfg.train.max_length, teacher_tokenizer=t_tok)

        train_set = AugmentedTrainSet(tok["train"], make_round, copies, reaug_every=a.reaug_every,
                                      repeated_aug=a.repeated_aug)
        logger.info("augmentation %s: %d original + %d augmented training examples, regenerated every %s epochs%s",
                    "+".join(a.stages), n_original, n_original * copies, a.reaug_every or "∞",
                    f", {a.repeated_aug} versions of each example per batch" if a.repeated_aug > 1 else "")
    from distiller_nlp.kd.teacher_cache import DTYPES

    if cfg.teacher_cache_dtype not in DTYPES:
        raise DistillerError(f"teacher_cache_dtype '{cfg.teacher_cache_dtype}' must be one of {', '.join(DTYPES)}")
    evals = eval_splits(tok, task)
    if t_tok is not None and not cfg.general:  # the student alone is evaluated
        from distiller_nlp.tasks.tokenize import TEACHER_PREFIX

        evals = {name: d.remove_columns([c for c in d.column_names if c.startswith(TEACHER_PREFIX)])
                 for name, d in evals.items()}
    return SimpleNamespace(cfg=cfg, cache_dtype=cfg.teacher_cache_dtype, n_original=n_original, task=task, raw=ds,
                           raw_train=originals,
                           teacher_path=teacher_path, teacher=teacher, extra_teachers=extra_teachers,
                           tokenizer=tokenizer, teacher_tokenizer=teacher_tokenizer, cross_tokenizer=cross,
                           train_set=train_set, online_augment=online,
                           student=student, module=module, tok=tok, evals=evals,
                           collate=make_collator(tokenizer, is_regression=task.is_regression,
                                                 extra_columns=collate_teacher_columns, teacher_tokenizer=t_tok))


def describe_tokenizer(tokenizer) -> str:
    """``BertTokenizerFast 'minilm' (30,522 tokens)`` — how errors and logs name a tokenizer."""
    name = getattr(tokenizer, "name_or_path", "") or "?"
    return f"{type(tokenizer).__name__} '{name}' ({len(tokenizer):,} tokens)"


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers map text to the same ids (same class family, vocabulary and lower-casing)."""
    if a is b:
        return True
    if a.get_vocab() != b.get_vocab():
        return False
    probe = "Hello World, naïve café — 123 tokens!"
    return a(probe)["input_ids"] == b(probe)["input_ids"]


def student_own_tokenizer(student: str, teacher_tokenizer, trust_remote_code: bool = False):
    """The tokenizer a student checkpoint ships, or ``teacher_tokenizer`` when it ships none or the same one (then
    the run is an ordinary single-tokenizer run)."""
    from distiller_nlp.models import load_tokenizer, resolve_model_path

    path = resolve_model_path(student)
    try:
        own = load_tokenizer(path, trust_remote_code=trust_remote_code)
    except (DistillerError, OSError, ValueError) as exc:
        logger.info("student %s ships no tokenizer (%s): it reads the teacher's", student, exc)
        return teacher_tokenizer
    if same_tokenizer(own, teacher_tokenizer):
        return teacher_tokenizer
    logger.info("cross-tokenizer distillation: the teacher reads %s, the student %s (each tokenizes the raw text)",
                describe_tokenizer(teacher_tokenizer), describe_tokenizer(own))
    return own


def check_cross_tokenizer(cfg: DistillConfig, matches, teacher_tokenizer, student_tokenizer) -> None:
    """What a teacher with another tokenizer cannot do: token-level matches (per-token hidden states, attention
    scores), MixUp on word embeddings, general distillation; one-line errors naming both tokenizers."""
    both = (f"the teacher reads {describe_tokenizer(teacher_tokenizer)}, the student "
            f"{describe_tokenizer(student_tokenizer)}")
    for m in matches:
        if m.token_level:
            raise DistillerError(
                f"intermediate match {m.name} compares the models token by token, but {both}: use a sequence-level "
                "match (feature hidden with pool: cls or mean) or a student with the teacher's tokenizer")
    if cfg.kd.mixup:
        raise DistillerError(f"kd.mixup mixes word embeddings of one tokenization, but {both}")
    if cfg.general:
        raise DistillerError(f"general distillation matches tokens, but {both}")


