"""Adding one thing is one decorated object in one file: a toy prediction loss, mapping strategy, vision dataset and
supernet sampling strategy are registered here and used from a recipe, and the help texts and checks that list such
names see them without any other edit."""

from __future__ import annotations

import json
import os

import pytest
import torch

from distiller_nlp.cli import build_parser, main
from distiller_nlp.core.errors import DistillerError

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"
FAST = ["--precision", "no", "--report-to", "none", "--max-length", "16", "--batch-size", "16", "--max-steps", "2"]


def _help(parser, command: str) -> str:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return " ".join(sub.choices[command].format_help().split())


def _recipe(tmp_path, tiny_teacher, sst2_dir, kd: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"teacher: {tiny_teacher}\nstudent_shape: {STUDENT}\ndata: {{task: sst2, data_dir: {sst2_dir}}}\n"
                    f"kd: {kd}\n")
    return str(path)


def test_a_registered_prediction_loss_is_usable_from_a_recipe(tiny_teacher, sst2_dir, tmp_path):
    from distiller_nlp.core.losses import LOSSES, prediction_losses, register_loss

    calls = []
    with LOSSES.scope():
        @register_loss("toy_l1_probs", kind="logits", takes=("teacher_logits",), probabilities=True)
        def toy(student_logits, teacher_logits, temperature=1.0):
            """L1 distance of the tempered probabilities."""
            calls.append(student_logits.shape)
            p_s = torch.softmax(student_logits / temperature, -1)
            p_t = torch.softmax(teacher_logits / temperature, -1)
            return (p_s - p_t).abs().sum(-1).mean()

        assert "toy_l1_probs" in prediction_losses()
        assert "toy_l1_probs" in _help(build_parser(), "distill")  # the --pred-loss help lists it
        out = tmp_path / "out"
        code = main(["distill", "--config", _recipe(tmp_path, tiny_teacher, sst2_dir, "{pred_loss: toy_l1_probs}"),
                     "--output-dir", str(out), *FAST])
        assert code == 0 and calls, "the registered loss was not called"
        history = json.loads((out / "history.json").read_text())
        assert "toy_l1_probs" in history["train"][-1]  # logged under its name
    assert "toy_l1_probs" not in prediction_losses()


def test_a_registered_mapping_strategy_is_usable_from_a_recipe(tiny_teacher, sst2_dir, tmp_path):
    from distiller_nlp.kd.mapping import MAPPING_STRATEGIES, layer_mapping

    with MAPPING_STRATEGIES.scope():
        @MAPPING_STRATEGIES.register("first_only")
        def first_only(teacher_layers, student_layers, feature="hidden"):
            """Every student layer against the teacher's first encoder layer."""
            low = 0 if feature == "hidden" else 1
            return [(1, s) for s in range(max(1, low), student_layers + 1)]

        assert layer_mapping("first_only", 2, 1) == [(1, 1)]
        assert "first_only" in _help(build_parser(), "distill")  # the --mapping help lists it
        out = tmp_path / "out"
        code = main(["distill", "--config", _recipe(tmp_path, tiny_teacher, sst2_dir,
                                                    "{pred_loss: kd, mapping: {strategy: first_only}}"),
                     "--output-dir", str(out), *FAST])
        assert code == 0
        history = json.loads((out / "history.json").read_text())
        assert "hidden_mse/S1-T1" in history["train"][-1]
    with pytest.raises(DistillerError, match="first_only"):
        layer_mapping("first_only", 2, 1)


def test_an_unknown_registered_name_is_a_one_line_error(tiny_teacher, sst2_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["distill", "--config", _recipe(tmp_path, tiny_teacher, sst2_dir, "{pred_loss: toy_missing}"),
                 "--output-dir", str(out), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "toy_missing" in err[0] and not os.path.exists(out)


def test_a_registered_vision_dataset_is_usable_from_a_recipe(tmp_path):
    from vision_kd.cli import build_parser as vision_parser
    from vision_kd.cli import main as vision_main
    from vision_kd.data import VISION_DATASETS, DataRequest, classification_data

    seen = []
    with VISION_DATASETS.scope():
        @VISION_DATASETS.register("toy_bars", family="", defaults={"student": "mlp_small"})
        def toy_bars(request: DataRequest):
            """Two classes of 8×8 images: a bright row or a bright column, with noise."""
            seen.append(request.split_seed)
            g = torch.Generator().manual_seed(0)
            images = torch.rand(120, 1, 8, 8, generator=g) * 0.2
            labels = torch.arange(120) % 2
            for i in range(120):
                if labels[i]:
                    images[i, 0, :, i % 8] += 1.0
                else:
                    images[i, 0, i % 8, :] += 1.0
            return classification_data("toy_bars", images, labels, 2, request.split_seed, request.augment,
                                       request.max_train_examples)

        assert "toy_bars" in _help(vision_parser(), "train")  # the --dataset help lists it
        recipe = tmp_path / "toy.yaml"
        recipe.write_text("method: ce\ndataset: toy_bars\ntrain: {epochs: 2, batch_size: 32, lr: 0.01}\n")
        out = tmp_path / "out"
        assert vision_main(["train", "--config", str(recipe), "--output-dir", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert seen and metrics["dataset"] == "toy_bars" and metrics["student_arch"] == "mlp_small"
        assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert "toy_bars" not in VISION_DATASETS


def test_a_registered_supernet_sampler_is_usable_from_a_recipe(tmp_path):
    from transformers import BertConfig, BertModel

    from autodistil.cli import main as autodistil_main
    from autodistil.sampling import SAMPLERS, Sampler
    from distiller_nlp.models import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    (tmp_path / "space.yaml").write_text("name: tiny\nhead_dim: 8\nlayers: [1, 2]\nheads: [2, 4]\nhidden: [16, 32]\n"
                                         "mlp_ratio: [1.0, 2.0]\n")
    sampled = []
    with SAMPLERS.scope():
        @SAMPLERS.register("largest_only")
        class LargestOnly(Sampler):
            """Only the largest subnet, every step."""

            named = ("rel_largest",)

            def sample(self, archs_by_size, num_random, rng):
                sampled.append(archs_by_size[-1])
                return [archs_by_size[-1]]

        recipe = tmp_path / "train.yaml"
        recipe.write_text(f"teacher: {tmp_path / 'teacher'}\nsubspaces: {tmp_path / 'space.yaml'}\n"
                          "sampling: largest_only\ndata: {task: tweets, max_train_examples: 32}\n"
                          "objective: {relation_heads: 4}\n"
                          "train: {max_steps: 2, batch_size: 8, max_length: 16, precision: 'no', report_to: none}\n")
        out = tmp_path / "superlm"
        assert autodistil_main(["train-superlm", "--config", str(recipe), "--output-dir", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["sampling"] == "largest_only" and metrics["global_step"] == 2
        assert sampled and all(a == sampled[0] for a in sampled)
        assert sampled[0].layers == 2 and sampled[0].hidden == 32
    assert "largest_only" not in SAMPLERS
