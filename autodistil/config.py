"""Config schema of the ``autodistil`` commands: YAML recipes and flags share it (unknown keys are errors naming key
and file; loaded with :func:`distiller_nlp.config.load_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from distiller_nlp.config import TrainArgs
from distiller_nlp.errors import DistillerError

SAMPLINGS = ("sandwich", "uniform")
RELATION_KINDS = ("kl", "mse")
SCORES = ("task-agnostic", "task-proxy")


@dataclass
class TextDataConfig:
    """Unlabelled text: a registered task's texts (``tweets``, ``bbc-headlines``, GLUE with ``data_dir``) or, online,
    any Hub corpus (``hub_dataset`` [+ ``hub_config``], column ``text_column`` or ``text``)."""

    task: str = "tweets"
    data_dir: str = ""
    text_column: str = ""
    hub_dataset: str = ""
    hub_config: str = ""
    max_train_examples: int = 0  # 0 = all
    heldout_examples: int = 256  # held-out sequences (validation split) that score candidates in search


@dataclass
class ObjectiveConfig:
    """MiniLMv2 Q-Q/K-K/V-V relations between a teacher layer and the student's last layer."""

    relation_heads: int = 12
    kind: str = "kl"  # kl (MiniLMv2) | mse (pre-softmax, AutoDistil's released code)
    teacher_layer: int = 0  # 1..L, 0 = the teacher's last layer

    def validate(self, source: str) -> None:
        if self.kind not in RELATION_KINDS:
            raise DistillerError(f"objective.kind: '{self.kind}' in {source} is not one of {', '.join(RELATION_KINDS)}")
        if self.relation_heads <= 0:
            raise DistillerError(f"objective.relation_heads in {source} must be positive, got {self.relation_heads}")
        if self.teacher_layer < 0:
            raise DistillerError(f"objective.teacher_layer in {source} must be 1..L or 0 (last), got "
                                 f"{self.teacher_layer}")


@dataclass
class TrainSuperLMConfig:
    """``autodistil train-superlm``: one SuperLM per sub-space, trained task-agnostically on the shared engine."""

    teacher: str = "minilm"
    subspaces: str = "all"  # comma list of built-in names / YAML files; all = the teacher's K=3; oneshot = its K=1
    plain_bert: bool = False
    layer_selection: str = "uniform"  # uniform | first
    sampling: str = "sandwich"  # sandwich (largest + smallest + num_random) | uniform (one random subnet)
    num_random: int = 2
    output_dir: str = ""
    data: TextDataConfig = field(default_factory=TextDataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainArgs = field(default_factory=TrainArgs)

    def validate(self, source: str = "config") -> None:
        if self.sampling not in SAMPLINGS:
            raise DistillerError(f"sampling: '{self.sampling}' in {source} is not one of {', '.join(SAMPLINGS)}")
        if self.layer_selection not in ("uniform", "first"):
            raise DistillerError(f"layer_selection: '{self.layer_selection}' in {source} must be uniform or first")
        if self.num_random < 0:
            raise DistillerError(f"num_random in {source} must be >= 0, got {self.num_random}")
        self.objective.validate(source)


@dataclass
class ProxyConfig:
    """``score: task-proxy``: a short fine-tune of each inherited subnet on ``k`` labelled examples per class of
    ``task``, scored by the main metric on ``eval_examples`` validation examples (higher is better)."""

    task: str = "tweets"
    data_dir: str = ""
    k: int = 16
    steps: int = 20
    lr: float = 1e-4
    batch_size: int = 16
    eval_examples: int = 256


@dataclass
class SearchConfig:
    """``autodistil search``: score inherited subnets of trained SuperLMs under a FLOPs budget (no retraining)."""

    superlm: list[str] = field(default_factory=list)
    budget: float = 0.0  # FLOPs (2 x multiply-adds) of one sequence of max_length tokens
    budget_ratio: float = 0.0  # budget as a fraction of the teacher's encoder FLOPs at max_length
    score: str = "task-agnostic"
    plain_bert: bool = False
    max_length: int = 128
    batch_size: int = 64
    precision: str = "auto"
    cpu: bool = False
    max_evals: int = 1024  # exhaustive up to this many fitting candidates, else Optuna TPE with this many trials
    seed: int = 42
    output_dir: str = ""
    data: TextDataConfig = field(default_factory=TextDataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    def validate(self, source: str = "config") -> None:
        if not self.superlm:
            raise DistillerError("search needs at least one --superlm DIR")
        if (self.budget > 0) == (self.budget_ratio > 0):
            raise DistillerError("give exactly one of --budget FLOPS or --budget-ratio R (both positive)")
        if self.score not in SCORES:
            raise DistillerError(f"score: '{self.score}' in {source} is not one of {', '.join(SCORES)}")
        if self.precision not in ("auto", "no", "bf16", "fp16"):
            raise DistillerError(f"precision: '{self.precision}' in {source} must be auto, no, bf16 or fp16")
        for name in ("max_length", "batch_size", "max_evals"):
            if getattr(self, name) <= 0:
                raise DistillerError(f"{name} in {source} must be positive, got {getattr(self, name)}")
        for name in ("k", "steps", "batch_size", "eval_examples"):
            if getattr(self.proxy, name) <= 0:
                raise DistillerError(f"proxy.{name} in {source} must be positive, got {getattr(self.proxy, name)}")
        if self.data.heldout_examples <= 0:
            raise DistillerError(f"data.heldout_examples in {source} must be positive")
        self.objective.validate(source)
