"""autodistil.subspaces: the built-in sub-spaces, YAML user spaces, the plain-BERT restriction, the arch grammar."""

import pytest

from autodistil.subspaces import BUILTIN_SPACES, Arch, SubSpace, get_space, load_space, parse_arch, resolve_spaces
from autodistil.superlm import layer_map
from distiller_nlp.core.flops import encoder_flops
from distiller_nlp.core.errors import DistillerError


@pytest.mark.parametrize("name,layers,heads,hidden,ratio,head_dim", [
    ("bert-base", (9, 10, 11, 12), (9, 10, 11, 12), (544, 576, 608, 640), (2.5, 3.0, 3.5, 4.0), 64),
    ("bert-small", (9, 10, 11, 12), (7, 8, 9, 10), (256, 288, 320, 352), (2.5, 3.0, 3.5, 4.0), 64),
    ("bert-tiny", (4, 5, 6, 7), (7, 8, 9, 10), (128, 160, 192, 224), (2.0, 2.5, 3.0, 3.5), 64),
    ("minilm-base", (3, 4, 5, 6), (9, 10, 11, 12), (288, 320, 352, 384), (2.5, 3.0, 3.5, 4.0), 32),
    ("minilm-small", (3, 4, 5, 6), (6, 7, 8, 9), (192, 224, 256, 288), (2.0, 2.5, 3.0, 3.5), 32),
    ("minilm-tiny", (2, 3, 4, 5), (3, 4, 5, 6), (96, 128, 160, 192), (2.0, 2.5, 3.0, 3.5), 32),
])
def test_builtin_k3_spaces(name, layers, heads, hidden, ratio, head_dim):
    s = BUILTIN_SPACES[name]
    assert (s.layers, s.heads, s.hidden, s.mlp_ratio, s.head_dim) == (layers, heads, hidden, ratio, head_dim)
    assert len(s) == 256 == len(list(s))


def test_oneshot_spaces():
    s = BUILTIN_SPACES["minilm-oneshot"]
    assert s.layers == (1, 2, 3, 4, 5, 6) and s.heads == tuple(range(1, 13))
    assert s.hidden == (64, 128, 192, 256, 320, 384) and s.mlp_ratio == (1.0, 2.0, 3.0, 4.0)
    assert len(s) == 6 * 12 * 6 * 4
    assert len(BUILTIN_SPACES["bert-oneshot"]) == 13824


def test_arch_flops_and_width():
    a = Arch(4, 192, 5, 3.0, 32)
    assert a.intermediate == 576 and a.attention_width == 160 and not a.is_plain_bert
    assert a.flops(64) == encoder_flops(4, 192, 5, 576, 64, head_dim=32)
    # the MiniLM teacher shape is the largest subnet of minilm-base; its FLOPs equal the teacher's
    assert BUILTIN_SPACES["minilm-base"].largest() == Arch(6, 384, 12, 4.0, 32)
    assert Arch(6, 384, 12, 4.0, 32).flops(128) == 2_868_903_936
    assert BUILTIN_SPACES["minilm-tiny"].smallest() == Arch(2, 96, 3, 2.0, 32)


def test_plain_bert_restriction():
    s = get_space("minilm-tiny", plain_bert=True)
    assert len(s) == 64 and all(a.is_plain_bert for a in s)
    assert Arch(2, 96, 3, 2.0, 32) in s and Arch(2, 96, 4, 2.0, 32) not in s
    with pytest.raises(DistillerError, match="no plain-BERT shape"):
        get_space("bert-small", plain_bert=True)


def test_yaml_space(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nhead_dim: 16\nlayers: [1, 2]\nheads: [2]\nhidden: [32, 48]\nmlp_ratio: [2]\n")
    s = load_space(str(path))
    assert s.name == "mine" and len(s) == 4 and get_space(str(path)) == s
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [1]\nheads: [2]\nhidden: [32]\nmlp_ratio: [2]\nwidth: [3]\n")
    with pytest.raises(DistillerError, match=r"unknown key 'width' in .*bad.yaml"):
        load_space(str(bad))
    with pytest.raises(DistillerError, match="unknown sub-space"):
        get_space("nope")


def test_resolve_all_and_parse_arch():
    assert [s.name for s in resolve_spaces("all", 384, 32)] == ["minilm-base", "minilm-small", "minilm-tiny"]
    assert [s.name for s in resolve_spaces("all", 768, 64)] == ["bert-base", "bert-small", "bert-tiny"]
    assert [s.name for s in resolve_spaces("oneshot", 384, 32)] == ["minilm-oneshot"]
    assert parse_arch("layers=4,hidden=192,heads=6,mlp_ratio=3", head_dim=32) == Arch(4, 192, 6, 3.0, 32)
    with pytest.raises(DistillerError, match="unknown arch key 'width'"):
        parse_arch("layers=4,width=3")


def test_parse_arch_reads_the_shape_grammar():
    assert parse_arch("L=4,H=192,A=6,R=3,d=32") == Arch(4, 192, 6, 3.0, 32)
    assert parse_arch({"layers": "2", "hidden": "64", "heads": "2", "mlp_ratio": "1.5", "head_dim": "32"}) == Arch(
        2, 64, 2, 1.5, 32)
    with pytest.raises(DistillerError, match="given twice"):
        parse_arch("layers=4,L=3,hidden=192,heads=6,mlp_ratio=3")
    with pytest.raises(DistillerError, match="misses key"):
        parse_arch("layers=4,hidden=192")
    with pytest.raises(DistillerError, match="is not key=value"):
        parse_arch("layers=4,hidden")
    with pytest.raises(DistillerError, match="cannot read an architecture"):
        parse_arch(42)


def test_layer_maps():
    # AutoDistil/DynaBERT uniform depth (keep floor(i·L_max/L)) and first-k
    assert layer_map(9, 12) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert layer_map(4, 12) == [0, 3, 6, 9]
    assert layer_map(7, 12) == [0, 1, 3, 5, 6, 8, 10]
    assert layer_map(4, 6) == [0, 1, 3, 4]
    assert layer_map(3, 6, "first") == [0, 1, 2]
    with pytest.raises(DistillerError):
        layer_map(7, 6)


def test_subspace_validation():
    with pytest.raises(DistillerError, match="non-empty list"):
        SubSpace("x", [], [1], [8], [1.0], 8)


def test_recipes_load():
    import glob
    import os

    from autodistil.config import SearchConfig, TrainSuperLMConfig
    from distiller_nlp.core.config import load_config

    root = os.path.join(os.path.dirname(__file__), "..", "recipes", "autodistil")
    assert load_config(TrainSuperLMConfig, os.path.join(root, "train-minilm-k3.yaml")).subspaces == "all"
    assert load_config(TrainSuperLMConfig, os.path.join(root, "train-minilm-oneshot.yaml")).train.max_steps == 3000
    assert load_config(SearchConfig, os.path.join(root, "search-quarter.yaml")).budget_ratio == 0.25
    assert len(load_space(os.path.join(root, "space-minilm-custom.yaml"))) == 81
    assert len(glob.glob(os.path.join(root, "*.yaml"))) == 4
