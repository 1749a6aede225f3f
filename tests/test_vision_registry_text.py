"""The same loss registry serves text: ``distiller-nlp distill`` with ``--pred-loss nkd`` and ``dkd`` distils a tiny
BERT classifier, using exactly the loss functions the vision methods use.

The teacher is a tiny ``BertForSequenceClassification`` (2 labels, the packaged WordPiece tokenizer) saved by the test
itself: building it takes a second, where conftest's fine-tuned ``tiny_teacher`` costs 10–40 s on a busy 2-core
machine and the point here is the registry path, not the teacher's quality (test_cli.py covers fine-tuned teachers).
"""

import json
import os

import pytest
import torch

from conftest import TINY_BACKBONE
from distiller_nlp.cli import main
from distiller_nlp.core.losses import dkd_loss, get_loss, nkd_loss


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    from vision_kd.train import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    from distiller_nlp.models import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, num_labels=2, **TINY_BACKBONE))
    out = tmp_path_factory.mktemp("tiny_bert_classifier")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("pred_loss", ["nkd", "dkd"])
def test_distiller_nlp_distills_with_vision_logit_losses(pred_loss, tiny_classifier, sst2_dir, tmp_path):
    out = tmp_path / "o"
    code = main(["distill", "--teacher", tiny_classifier, "--task", "sst2", "--data-dir", sst2_dir,
                 "--student-shape", "layers=1,hidden=16,heads=2,intermediate=32", "--pred-loss", pred_loss,
                 "--max-steps", "3", "--precision", "no", "--report-to", "none", "--max-length", "16",
                 "--output-dir", str(out)])
    assert code == 0
    with open(os.path.join(out, "metrics.json")) as fh:
        m = json.load(fh)
    assert 0.0 <= m["eval_accuracy"] <= 1.0 and m["global_step"] == 3
    assert get_loss(pred_loss) is {"nkd": nkd_loss, "dkd": dkd_loss}[pred_loss]
