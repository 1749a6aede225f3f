"""``datasets`` image sets through ``imagefolder``: a class-per-directory classification set and an image+points
landmark set (``metadata.jsonl``); a landmark row of the wrong length is a one-line error."""

import json
import os

import numpy as np

from vision_kd.cli import main
from vision_kd.data import load_hf_image_data

FAST = ["--threads", "1", "--precision", "no", "--report-to", "none"]


def write_images(root, n_per_class=8, size=12, mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_per_class), ("validation", 3)):
        for c, name in enumerate(("bars", "dots")):
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 60, (size, size)).astype(np.uint8)
                if c == 0:
                    arr[::3] = 250
                else:
                    arr[::3, ::3] = 250
                img = Image.fromarray(arr, "L").convert(mode)
                img.save(os.path.join(d, f"{i}.png"))


def test_imagefolder_classification_trains_from_the_cli(tmp_path):
    root = str(tmp_path / "imgs")
    write_images(root, mode="RGB")
    data = load_hf_image_data("imagefolder", root, image_size=16)
    assert data.num_outputs == 2 and data.in_channels == 3 and data.image_size == 16
    assert len(data.train) == 16 and len(data.validation) == 6
    out = tmp_path / "run"
    assert main(["train", "--method", "ce", "--dataset", "imagefolder", "--data-dir", root, "--student", "resnet8x4",
                 "--image-size", "16", "--augment", "--max-steps", "2", "--batch-size", "8", "--output-dir",
                 str(out), *FAST]) == 0
    with open(out / "metrics.json") as fh:
        assert 0 <= json.load(fh)["eval_accuracy"] <= 1


def test_imagefolder_landmarks_and_wrong_count(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "faces"
    (root / "train").mkdir(parents=True)
    rows = []
    for i in range(10):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8), "L").save(root / "train" / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "landmarks": [0.1 * i, 0.2, 0.3, 0.4, 0.5, 0.6]})
    (root / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_hf_image_data("imagefolder", str(root), task="landmarks", num_landmarks=3)
    assert data.task == "landmarks" and data.num_landmarks == 3 and "asm_labels" in data.train[0]
    rows[4]["landmarks"] = rows[4]["landmarks"][:4]
    (root / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["train", "--method", "ce", "--dataset", "imagefolder", "--task", "landmarks", "--data-dir",
                 str(root), "--set", "num_landmarks=3", "--output-dir", str(tmp_path / "never"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "landmarks of the wrong count" in err and "has 4 coordinates, expected 6" in err
    assert not (tmp_path / "never").exists()
