"""Config schema of the ``autodistil`` commands: YAML recipes and flags share it (fields carry help, range and flag;
unknown keys are errors naming key and file; loaded with :func:`distiller_nlp.core.config.load_config`)."""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import check_config, option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import PRECISIONS, TrainArgs, parse_auto

__all__ = ["TextDataConfig", "RelationConfig", "ObjectiveConfig", "TrainSuperLMConfig", "ProxyConfig", "SearchConfig",
           "RELATION_KINDS", "MSE_PAIRS", "SCORES"]

RELATION_KINDS = ("kl", "mse")
MSE_PAIRS = ("all", "valid")  # the same names as distiller_nlp.core.losses.relations.MSE_PAIRS
SCORES = ("task-agnostic", "task-proxy")


def _samplings() -> list:
    from autodistil.sampling import SAMPLERS

    return SAMPLERS.names()


def _flops_conventions() -> list:
    from distiller_nlp.core.flops import FLOPS_CONVENTIONS

    return FLOPS_CONVENTIONS.names()


@dataclass
class TextDataConfig:
    """Unlabelled text: a registered task's texts (``tweets``, ``bbc-headlines``, GLUE with ``data_dir``) or, online,
    any Hub corpus (``hub_dataset`` [+ ``hub_config``], column ``text_column`` or ``text``)."""

    task: str = option("tweets", help="text source: tweets, bbc-headlines, a GLUE name with --data-dir", flag=True)
    data_dir: str = option("", help="directory with local task files", flag=True)
    text_column: str = option("", help="text column (custom or Hub data)", flag=True)
    hub_dataset: str = option("", help="any Hub text corpus (online)", flag=True)
    hub_config: str = option("", help="configuration name of --hub-dataset", flag=True)
    max_train_examples: int = option(0, help="cap on training texts (0 = all)", min=0, flag=True)
    heldout_examples: int = option(256, help="held-out sequences (validation split) that score candidates in search",
                                   positive=True, flag=True)


@dataclass
class RelationConfig:
    """Q-Q/K-K/V-V relations between a teacher layer and the student's last layer (``objective:`` of a search: the
    held-out score, which always averages over real tokens only, see :mod:`autodistil.search`).

    ``kind`` defaults to ``mse``, the pre-softmax relation MSE AutoDistil's released code trained with
    (``Code/run_wiki_plus_book_NoAssist_RndSampl.py`` line 470, github.com/microsoft/autodistil); ``kl`` is
    MiniLMv2's KL between softmax relations (the default before issue #17; recipes that say ``kind: kl`` keep it)."""

    relation_heads: int = option(12, help="relation heads of the MiniLMv2 loss", positive=True, flag=True)
    kind: str = option("mse", help="{choices} (mse: pre-softmax relation MSE, AutoDistil's released code; kl: "
                                   "MiniLMv2's softmax KL)",
                       choices=RELATION_KINDS, flag="relation-kind")
    teacher_layer: int = option(0, help="teacher layer 1..L (0 = the teacher's last layer)", min=0, flag=True)

    def validate(self, source: str) -> None:
        """Ranges and choices of the section (``objective.<key>`` in messages)."""
        check_config(self, source, prefix="objective.")


@dataclass
class ObjectiveConfig(RelationConfig):
    """The SuperLM training objective: :class:`RelationConfig` plus how the ``mse`` kind averages (``mse_pairs``):
    ``all`` (default) = the mean over every (query, key) entry of the padded batch, pads included — AutoDistil's
    released code (``torch.nn.MSELoss`` on scores that both carry the same −10000 mask); ``valid`` = over the pairs
    of real tokens only (padding-independent). See :mod:`distiller_nlp.core.losses.relations`."""

    mse_pairs: str = option("all", choices=MSE_PAIRS, flag="relation-mse-pairs",
                            help="{choices}: entries the mse kind averages over (all: every padded-batch entry, "
                                 "AutoDistil's released code; valid: real-token pairs only; ignored by kl)")


@dataclass
class SuperLMTrainArgs(TrainArgs):
    """:class:`~distiller_nlp.core.train_args.TrainArgs` for SuperLM training: a fixed length and learning rate (the
    task-agnostic relation loss has no dev metric worth stopping on, and the weight-sharing sandwich makes a range
    test's loss noisy); ``--lr auto`` / ``--epochs auto`` still opt in."""

    epochs: float = option(3.0, help="training epochs, or 'auto' (3 epochs, at least --min-steps steps, early "
                                     "stopping)", min=0, flag=True, parse=parse_auto)
    lr: float = option(5e-5, help="peak learning rate, or 'auto' (a short LR range test)", min=0, flag=True,
                       parse=parse_auto)


@dataclass
class TrainSuperLMConfig:
    """``autodistil train-superlm``: one SuperLM per sub-space, trained task-agnostically on the shared engine."""

    teacher: str = option("minilm", help="BERT teacher: directory, 'minilm' or Hub id", flag=True)
    subspaces: str = option("all", flag=True,
                            help="comma list of sub-spaces (built-in names or YAML files); all = the teacher's K=3, "
                                 "oneshot = its K=1")
    plain_bert: bool = option(False, flag=True,
                              help="restrict sub-spaces to shapes that export as plain BERT (heads x head_dim = "
                                   "hidden)")
    layer_selection: str = option("uniform", help="{choices} (uniform: keep floor(i*Lmax/L))",
                                  choices=("uniform", "first"), flag=True)
    sampling: str = option("sandwich", help="supernet sampling strategy: {choices}", choices=_samplings, flag=True)
    num_random: int = option(2, help="random subnets per sandwich step", min=0, flag=True)
    output_dir: str = option("", help="output directory (must be empty unless --resume/--overwrite)",
                             flag="output-dir")
    data: TextDataConfig = option(default_factory=TextDataConfig, help="the training text")
    objective: ObjectiveConfig = option(default_factory=ObjectiveConfig, help="the relation objective")
    train: SuperLMTrainArgs = option(default_factory=SuperLMTrainArgs, help="training settings")

    def validate(self, source: str = "config") -> None:
        """Ranges and choices of every field."""
        check_config(self, source)


@dataclass
class ProxyConfig:
    """``score: task-proxy``: a short fine-tune of each inherited subnet on ``k`` labelled examples per class of
    ``task``, scored by the main metric on ``eval_examples`` validation examples (higher is better)."""

    task: str = option("tweets", help="task-proxy: labelled task", flag="proxy-task")
    data_dir: str = option("", help="task-proxy: directory of the labelled task's files")
    k: int = option(16, help="task-proxy: labelled examples per class", positive=True, flag="proxy-k")
    steps: int = option(20, help="task-proxy: fine-tuning steps per candidate", positive=True, flag="proxy-steps")
    lr: float = option(1e-4, help="task-proxy: learning rate", positive=True)
    batch_size: int = option(16, help="task-proxy: batch size", positive=True)
    eval_examples: int = option(256, help="task-proxy: validation examples scored", positive=True)


@dataclass
class SearchConfig:
    """``autodistil search``: score inherited subnets of trained SuperLMs under a FLOPs budget (no retraining)."""

    superlm: list[str] = option(default_factory=list, nargs="+", flag=True,
                                help="SuperLM directories (or directories holding them)")
    budget: float = option(0.0, min=0, flag=True,
                           help="FLOPs budget of one sequence of --max-length tokens, in the unit of "
                                "--flops-convention (exact: FLOPs = 2 x multiply-adds; autodistil: multiply-adds)")
    budget_ratio: float = option(0.0, min=0, flag=True,
                                 help="budget as a fraction of the teacher's encoder FLOPs at max_length (teacher "
                                      "counted in --flops-convention)")
    flops_convention: str = option("exact", choices=_flops_conventions, flag=True,
                                   help="{choices}: how budgets, candidates and reports count FLOPs (exact: 2 x the "
                                        "real multiply-adds; autodistil: the paper's formula, multiply-adds, "
                                        "attention hidden x heads/12 wide)")
    score: str = option("task-agnostic", choices=SCORES, flag=True,
                        help="{choices} (held-out relation loss | short k-shot fine-tune)")
    plain_bert: bool = option(False, flag=True,
                              help="restrict sub-spaces to shapes that export as plain BERT (heads x head_dim = "
                                   "hidden)")
    max_length: int = option(128, help="sequence length of FLOPs and scoring", positive=True, flag=True)
    batch_size: int = option(64, help="scoring batch size", positive=True, flag=True)
    precision: str = option("auto", help="{choices}", choices=PRECISIONS, flag=True)
    cpu: bool = option(False, help="run on CPU", flag=True)
    max_evals: int = option(1024, positive=True, flag=True,
                            help="exhaustive up to N fitting candidates per SuperLM, else N Optuna trials")
    seed: int = option(42, help="seed of the held-out subset and Optuna", flag=True)
    output_dir: str = option("", help="output directory (must be empty unless --overwrite)", flag="output-dir")
    data: TextDataConfig = option(default_factory=TextDataConfig, help="the held-out text")
    objective: RelationConfig = option(default_factory=RelationConfig,
                                       help="the relation objective of the task-agnostic score")
    proxy: ProxyConfig = option(default_factory=ProxyConfig, help="the task-proxy score")

    def validate(self, source: str = "config") -> None:
        """Ranges and choices of every field, and the rules between them (one budget, at least one SuperLM)."""
        if not self.superlm:
            raise DistillerError("search needs at least one --superlm DIR")
        if (self.budget > 0) == (self.budget_ratio > 0):
            raise DistillerError("give exactly one of --budget FLOPS or --budget-ratio R (both positive)")
        check_config(self, source)
