"""vision_kd models, data and methods without the CLI: shapes, a saved teacher reloads, splits are stratified and
seeded, the ASM smoother, and every method's training loss falls over a few dozen steps on digits."""

import pytest
import torch

from distiller_nlp.core.errors import DistillerError
from vision_kd.data import ASM, load_digits_data, load_landmark_data, load_synthetic_data, stratified_split
from vision_kd.methods import METHODS, MethodContext, get_method
from vision_kd.models import ARCHS, build_model, load_model, parse_arch, save_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    from vision_kd.train import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(split_seed=0)


@pytest.mark.parametrize("arch,size", [("mlp", 8), ("mlp_small", 8), ("cnn", 8), ("resnet8x4", 8),
                                       ("resnet8x4", 32), ("vit_tiny", 8), ("vit_tiny", 32)])
def test_every_architecture_exposes_logits_feature_and_mid(arch, size):
    m = build_model(arch, 3 if size == 32 else 1, size, 7, seed=0)
    out = m(torch.randn(2, m.in_channels, size, size))
    assert out["logits"].shape == (2, 7)
    assert out["feature"].shape == (2, m.feature_dim) and out["mid"].shape == (2, m.mid_dim)


def test_resnet_shapes_match_the_cifar_conventions():
    n8 = sum(p.numel() for p in build_model("resnet8x4", 3, 32, 100).parameters())
    n32 = sum(p.numel() for p in build_model("resnet32x4", 3, 32, 100).parameters())
    assert 1.0e6 < n8 < 1.5e6 and 7.0e6 < n32 < 7.8e6  # RepDistiller: 1.23M and 7.43M


def test_arch_options_and_unknown_arch():
    assert parse_arch("mlp:hidden=64/32,dropout=0.1") == ("mlp", {"hidden": [64, 32], "dropout": 0.1})
    assert build_model("mlp:hidden=16", 1, 8, 10).feature_dim == 16
    with pytest.raises(DistillerError, match="unknown architecture 'resnet9000'"):
        build_model("resnet9000", 1, 8, 10)
    assert set(ARCHS) >= {"mlp", "cnn", "resnet8x4", "resnet32x4", "vit_tiny"}
    assert parse_arch("timm:resnet18") == ("timm", {"name": "resnet18"})
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        with pytest.raises(DistillerError, match="needs the timm package"):
            build_model("timm:resnet18", 3, 32, 10)


def test_saved_model_reloads_with_identical_outputs(tmp_path):
    m = build_model("cnn", 1, 8, 10, seed=3)
    m.eval()
    save_model(m, str(tmp_path / "t"), {"task": "classification"})
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["model.safetensors", "vision_model.json"]
    r = load_model(str(tmp_path / "t"))
    r.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(r(x)["logits"], m(x)["logits"])
    assert r.spec["task"] == "classification"
    with pytest.raises(DistillerError, match="not a saved vision_kd model"):
        load_model(str(tmp_path))


def test_digits_split_is_stratified_seeded_and_real(digits):
    assert len(digits.train) + len(digits.validation) + len(digits.test) == 1797
    assert digits.num_outputs == 10 and (digits.in_channels, digits.image_size) == (1, 8)
    counts = torch.bincount(digits.validation.labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    again = load_digits_data(split_seed=0)
    assert torch.equal(again.test.labels, digits.test.labels)
    other = stratified_split(digits.train.labels.numpy(), seed=1)
    assert sum(len(p) for p in other) == len(digits.train)


def test_synthetic_and_landmark_data():
    syn = load_synthetic_data(num_classes=4, per_class=20)
    assert syn.num_outputs == 4 and len(syn.train) == 48
    lm = load_landmark_data(num_landmarks=10, n=200)
    item = lm.train[0]
    assert item["pixel_values"].shape == (1, 16, 16) and item["labels"].shape == (20,)
    assert item["asm_labels"].shape == (20,) and lm.num_landmarks == 10


def test_asm_projects_onto_few_modes_and_clamps():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, 12, generator=g)
    shapes = torch.randn(300, 2, generator=g) @ basis + 0.01 * torch.randn(300, 12, generator=g)
    asm = ASM(shapes, variance=0.9)
    assert len(asm.eigenvalues) <= 2
    smooth = asm.smooth(shapes)
    assert (smooth - shapes).abs().mean() < 0.05
    far = asm.smooth(asm.mean.float() + 100 * asm.components[0].float())  # clamped to 3·sqrt(λ)
    b = (far.double() - asm.mean) @ asm.components[0]
    assert abs(float(b)) == pytest.approx(3 * float(asm.eigenvalues[0].sqrt()), rel=1e-4)


def _train_steps(module, dataset, steps, extra=None, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    losses = []
    module.train()
    while len(losses) < steps:
        for batch in loader:
            if extra is not None:
                batch = extra(batch)
            loss = module(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    return losses


@pytest.fixture(scope="module")
def digits_teacher(digits):
    teacher = build_model("mlp", 1, 8, 10, seed=0)
    module = get_method("ce")(teacher, get_method("ce").resolve_params({}), _ctx(digits))
    _train_steps(module, digits.train, 60)
    return teacher.eval()


def _ctx(data):
    return MethodContext(data=data, batches_per_epoch=17)


@pytest.mark.parametrize("name", ["ce", "kd", "dkd", "nkd", "uskd", "bdkd", "lwkd"])
def test_each_method_training_loss_falls_on_digits(name, digits, digits_teacher):
    from vision_kd.strategies import offline_teachers

    cls = get_method(name)
    params = cls.resolve_params({"warmup_epochs": 0} if name == "dkd" else {})  # fixed DKD weight
    kw = {}
    if name == "bdkd":
        kw["online_teacher"] = build_model("mlp", 1, 8, 10, seed=5)
    if name == "lwkd":
        # a synthetic-data teacher's outputs: class c most likely on samples of class c, instance noise
        kw["synthetic_teacher_logits"] = 4 * torch.eye(10)[:, None, :] + torch.randn(10, 8, 10)
    student = build_model("mlp_small", 1, 8, 10, seed=1)
    module = cls(student, params, _ctx(digits), **kw)
    run, _ = offline_teachers({"teacher": digits_teacher})

    def prepare(batch):
        with torch.no_grad():
            return run(batch) if cls.teacher_roles else batch
    losses = _train_steps(module, digits.train, 40, prepare)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"{name}: loss {first:.3f} -> {last:.3f}"
    assert module.predict({"pixel_values": digits.test.images[:4]}).shape == (4, 10)


def test_landmark_kd_loss_falls():
    data = load_landmark_data(num_landmarks=8, n=300)
    student = build_model("mlp:hidden=32", 1, 16, 16, seed=0)
    module = get_method("landmark_kd")(student, get_method("landmark_kd").resolve_params({}), _ctx(data))

    def add_teachers(batch):  # stand-in teachers: ground truth plus small offsets
        y = batch["labels"]
        return {**batch, "tough_logits": y + 0.02, "tolerant_logits": batch["asm_labels"]}

    losses = _train_steps(module, data.train, 40, add_teachers)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_dkd_warmup_counts_training_steps(digits):
    cls = get_method("dkd")
    module = cls(build_model("mlp_small", 1, 8, 10), cls.resolve_params({"warmup_epochs": 1}), _ctx(digits))
    w = [float(module.warmup.step(True)) for _ in range(20)]
    assert w[0] == pytest.approx(1 / 17) and w[-1] == 1.0
    assert float(module.warmup.step(False)) == 1.0


def test_params_presets_and_unknown_keys():
    nkd = get_method("nkd")
    assert nkd.resolve_params({}, "cifar").gamma == 3.5 and nkd.resolve_params({}, "cifar").temperature == 3.0
    assert nkd.resolve_params({}).gamma == 1.5
    assert get_method("uskd").resolve_params({}, "cifar").mu == 0.1
    with pytest.raises(DistillerError, match="unknown key 'params.gama'"):
        nkd.resolve_params({"gama": 2})
    with pytest.raises(DistillerError, match="unknown method 'fitnet'"):
        get_method("fitnet")
    assert set(METHODS) == {"ce", "kd", "dkd", "nkd", "uskd", "bdkd", "lwkd", "landmark_kd", "rrd", "ckd",
                            "nasty_teacher", "rolewise_da", "rdd"}
