"""``distiller_nlp.hf.DistillationTrainer``: our KD objective inside ``transformers.Trainer`` — the same loss as our
engine on the same batch, a 5-step ``Trainer.train()``, the student saved alone, and resume restoring both the
student and the projections."""

import os

import pytest
import torch

from distiller_nlp.config import DataConfig, DistillConfig, KDConfig, MatchConfig
from distiller_nlp.core.train_args import TrainArgs

KD = dict(pred_loss="kd", temperature=2.0, hard_label_weight=0.5,
          intermediate=[MatchConfig(layer_T=2, layer_S=1, feature="hidden", loss="hidden_mse")])
SHAPE = "layers=1,hidden=16,heads=2,intermediate=32"


@pytest.fixture()
def prepared(tiny_teacher, sst2_dir, tmp_path):
    from distiller_nlp.kd.setup import prepare_distillation

    cfg = DistillConfig(teacher=tiny_teacher, student_shape=SHAPE, output_dir=str(tmp_path / "unused"),
                        data=DataConfig(task="sst2", data_dir=sst2_dir), kd=KDConfig(**KD),
                        train=TrainArgs(max_length=16, precision="no", report_to="none"))
    return prepare_distillation(cfg)


def _trainer(run, out, **args):
    from transformers import TrainingArguments

    from distiller_nlp.hf import DistillationTrainer

    targs = TrainingArguments(str(out), use_cpu=True, report_to=[], per_device_train_batch_size=16,
                              per_device_eval_batch_size=32, learning_rate=1e-3, seed=0, dataloader_num_workers=0,
                              **args)
    return DistillationTrainer(model=run.student, teacher=run.teacher, kd_config=run.cfg.kd, args=targs,
                               train_dataset=run.tok["train"], eval_dataset=run.evals["validation"],
                               data_collator=run.collate, processing_class=run.tokenizer)


def test_same_loss_as_our_engine_on_the_same_batch(prepared, tmp_path):
    from distiller_nlp.kd.teachers import TeacherRunner

    run = prepared
    batch = run.collate([run.tok["train"][i] for i in range(12)])
    run.module.eval()
    with torch.no_grad():
        ours = run.module(TeacherRunner(run.teacher, run.module)(batch))
    trainer = _trainer(run, tmp_path / "t", max_steps=1)
    trainer.distill_module.load_state_dict(run.module.state_dict())  # the same projection weights
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
    assert theirs.item() == pytest.approx(ours["loss"].item(), rel=1e-6)
    assert {"kd", "hard_ce", "hidden_mse/S1-T2"} <= set(ours)


def test_five_steps_through_trainer_train(prepared, tmp_path):
    from transformers import AutoModelForSequenceClassification

    run = prepared
    before = {k: v.clone() for k, v in run.student.state_dict().items()}
    trainer = _trainer(run, tmp_path / "t", max_steps=5, logging_steps=1, eval_strategy="steps", eval_steps=5,
                       save_strategy="no")
    out = trainer.train()
    assert out.global_step == 5
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 5 and all({"kd", "hard_ce", "hidden_mse/S1-T2"} <= set(h) for h in logs)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 1 and torch.isfinite(torch.tensor(evals[0]["eval_loss"]))
    changed = [k for k, v in trainer.student.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and any("projections" in k for k in trainer.distill_module.state_dict())
    trainer.save_model(str(tmp_path / "student"))
    files = set(os.listdir(tmp_path / "student"))
    assert "model.safetensors" in files and "tokenizer.json" in files
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, trainer.student.state_dict()[k]), k


def test_resume_restores_student_and_projections(prepared, tmp_path):
    run = prepared
    trainer = _trainer(run, tmp_path / "t", max_steps=4, save_strategy="steps", save_steps=2, logging_steps=1)
    trainer.train()
    final = {k: v.clone() for k, v in trainer.distill_module.state_dict().items()}
    ckpt = tmp_path / "t" / "checkpoint-2"
    assert (ckpt / "distill_state.safetensors").is_file() and (ckpt / "model.safetensors").is_file()
    from safetensors.torch import load_file

    assert not any(k.startswith("projections") for k in load_file(str(ckpt / "model.safetensors")))
    # a fresh student + trainer resumed from step 2 ends where the uninterrupted run ended
    from distiller_nlp.models import build_student

    run.student = build_student(run.teacher, shape=SHAPE, init="auto", task=run.task, seed=123)
    again = _trainer(run, tmp_path / "t", max_steps=4, save_strategy="steps", save_steps=2, logging_steps=1)
    again.train(resume_from_checkpoint=str(ckpt))
    for k, v in again.distill_module.state_dict().items():
        assert torch.allclose(v, final[k], atol=1e-6), k


def test_bad_arguments_are_one_line_errors(prepared):
    from distiller_nlp.core.errors import DistillerError
    from distiller_nlp.hf import DistillationTrainer

    with pytest.raises(DistillerError, match="needs model="):
        DistillationTrainer(model=prepared.student)
    with pytest.raises(DistillerError, match="PreTrainedModel"):
        DistillationTrainer(model=torch.nn.Linear(2, 2), teacher=prepared.teacher)
