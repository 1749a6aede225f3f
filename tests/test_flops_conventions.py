"""FLOPs conventions (``exact`` and ``autodistil``), pinned against AutoDistil's published numbers.

Every expected value is computed here with plain arithmetic written in the test (never with the function under
test): AutoDistil's cost formula ``cal_flops_bert`` (``Code/finetune_plus_search_TaskProxy_glue.py`` lines 545-555,
github.com/microsoft/autodistil), in multiply-adds, n = 128 tokens,

    L·[3·n·H²·(A/12) + 2·n²·H·(A/12) + n·H² + 2·n·R·H²] + n·H² + 2·H,

and the exact multiply-adds of the implemented model (attention 64·A wide)

    L·[3·n·H·64A + 2·n²·64A + n·64A·H + 2·n·H·round(H·R)].

The student shapes are those hard-coded in the released fine-tuning yamls (``Code/run_yaml/
Finetune_Search_WikiBook_TaskProxy_{base,small_1,small_2,tiny}.yaml``, multipliers of BERT-base) plus the 6-layer
768-wide one-subnet of ``Code/run_yaml/Continue_Train_OneSub_wiki_book_Seqlen128.yaml`` (depth 6/12, width and hidden
12/12, ratio 4.0) and BERT-base itself.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from fractions import Fraction

import pytest
import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.flops import (
    FLOPS_CONVENTIONS,
    autodistil_flops,
    count_flops_with_torch,
    flops,
    flops_report,
    get_flops_convention,
    shape_dims,
)

transformers = pytest.importorskip("transformers")

N = 128


def paper_macs(L, A, H, R, n=N):
    """AutoDistil's formula, exactly (fractions), rounded to the nearest integer."""
    a, r = Fraction(A, 12), Fraction(R)
    return round(L * (3 * n * H * H * a + 2 * n * n * H * a + n * H * H + 2 * n * r * H * H) + n * H * H + 2 * H)


def released_code_macs(depth_mult, width_mult, hidden_mult, ratio, n=N):
    """``cal_flops_bert`` as the released code evaluates it: float multipliers of BERT-base (12 layers, 12 heads,
    hidden 768), truncated in the yamls (e.g. hidden 0.708 for 544)."""
    L, A, H, R = depth_mult * 12, width_mult * 12, hidden_mult * 768, ratio
    return (n * 3 * H * H * (A / 12) + n * n * (A / 12) * H * 2 + n * H * H + n * 2 * R * H * H) * L + n * H * H + 2 * H


def exact_macs(L, A, H, R, n=N, head_dim=64):
    w, inter = A * head_dim, round(H * R)
    return L * (3 * n * H * w + 2 * n * n * w + n * w * H + 2 * n * H * inter)


# name: (L, A, H, R), the yaml's multipliers (depth, width, hidden, ratio), the paper's printed G multiply-adds (with
# its printed digits), and the integer this test's own arithmetic gives (pinned literally)
SHAPES = {
    "bert-base": ((12, 12, 768, 4), (1.0, 1.0, 1.0, 4.0), "11.25", 11_249_124_864),
    "base": ((12, 9, 544, 3), (1.0, 0.75, 0.708, 3.0), "4.40", 4_402_971_712),
    "small_1": ((11, 8, 352, 4), (0.917, 0.667, 0.4583, 4.0), "2.02", 2_019_470_699),
    "small_2": ((11, 7, 256, 3), (0.917, 0.583, 0.3333, 3.0), "0.87", 869_619_541),
    "tiny": ((7, 10, 160, 3.5), (0.583, 0.833, 0.2083, 3.5), "0.27", 274_705_387),
    "onesub-6L-768": ((6, 12, 768, 4), (0.5, 1.0, 1.0, 4.0), "5.66", 5_662_311_936),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_autodistil_formula_matches_the_paper(name):
    (L, A, H, R), mults, printed, pinned = SHAPES[name]
    # the test's own arithmetic, the pinned integer and the function under test agree exactly
    assert paper_macs(L, A, H, R) == pinned
    assert autodistil_flops(L, H, A, R, seq_len=N) == pinned
    arch = f"layers={L},heads={A},hidden={H},mlp_ratio={R},head_dim=64"
    assert flops(arch, N, "autodistil") == pinned
    # the paper's rounded G multiply-adds, to its printed digits
    digits = len(printed.split(".")[1])
    assert f"{pinned / 1e9:.{digits}f}" == printed
    # the released code's float evaluation with truncated multipliers rounds to the same digits (< 0.1 % apart)
    released = released_code_macs(*mults)
    assert f"{released / 1e9:.{digits}f}" == printed
    assert abs(released - pinned) / pinned < 1e-3


def test_bert_base_hand_value_term_by_term():
    # per layer, n = 128, H = 768, A/12 = 1, R = 4:
    # 3·128·768² = 226,492,416; 2·128²·768 = 25,165,824; 128·768² = 75,497,472; 2·128·4·768² = 603,979,776
    per_layer = 226_492_416 + 25_165_824 + 75_497_472 + 603_979_776
    assert per_layer == 931_135_488
    # outside the layers: 128·768² + 2·768 = 75,497,472 + 1,536
    assert 12 * per_layer + 75_497_472 + 1_536 == 11_249_124_864 == autodistil_flops(12, 768, 12, 4)
    # and exact (2 × multiply-adds, attention 64·12 = 768 wide): the same layers without the outside terms
    assert flops({"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072}, N, "exact") == 2 * 12 * per_layer


# ------------------------------------------------------------------------------------------------- exact convention


def test_exact_convention_entry_point_equals_flop_counter_mode():
    # tests/test_flops.py pins encoder_flops against FlopCounterMode (eager and sdpa); this checks that the convention
    # entry point flops(config, n, "exact") counts the same, from a Hugging Face config
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=48, num_attention_heads=3, intermediate_size=80,
                                  vocab_size=97, max_position_embeddings=32, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    batch, seq = 2, 11
    ids = torch.randint(0, 97, (batch, seq), generator=torch.Generator().manual_seed(0))
    measured = count_flops_with_torch(model, ids, torch.ones_like(ids))
    # by hand: per layer 3·11·48·48 + 2·11²·48 + 11·48·48 + 2·11·48·80 = 76,032 + 11,616 + 25,344 + 84,480 MACs
    hand = 2 * 2 * (76_032 + 11_616 + 25_344 + 84_480)
    assert measured == batch * hand == batch * flops(cfg, seq, "exact")


# ----------------------------------------------------------------------------------------------------- flops_report


@pytest.mark.parametrize("name,ratio", [("bert-base", "0.99"), ("base", "1.11"), ("small_1", "1.29"),
                                        ("small_2", "1.57"), ("tiny", "2.45")])
def test_report_ratio_exact_over_autodistil(name, ratio):
    (L, A, H, R), _, _, pinned = SHAPES[name]
    report = flops_report(f"layers={L},heads={A},hidden={H},mlp_ratio={R},head_dim=64", N, "autodistil")
    macs = exact_macs(L, A, H, R)
    assert report["convention"] == "autodistil" and report["flops"] == pinned
    assert report["counts"]["exact"]["flops"] == 2 * macs and report["counts"]["exact"]["multiply_adds"] == macs
    assert report["counts"]["autodistil"]["multiply_adds"] == pinned
    assert report["exact_over_autodistil"] == round(macs / pinned, 4)
    assert f"{macs / pinned:.2f}" == ratio  # the module docstring's claims


def test_report_hand_values_base_and_tiny():
    # base (12, 9, 544, R 3), W = 576, I = 1632: 3·128·544·576 + 2·128²·576 + 128·576·544 + 2·128·544·1632
    base = 12 * (120_324_096 + 18_874_368 + 40_108_032 + 227_278_848)
    assert base == exact_macs(12, 9, 544, 3) == 4_879_024_128
    # tiny (7, 10, 160, R 3.5), W = 640, I = 560: 3·128·160·640 + 2·128²·640 + 128·640·160 + 2·128·160·560
    tiny = 7 * (39_321_600 + 20_971_520 + 13_107_200 + 22_937_600)
    assert tiny == exact_macs(7, 10, 160, 3.5) == 674_365_440
    assert flops_report("L=12,A=9,H=544,R=3,d=64")["counts"]["exact"]["flops"] == 2 * base
    assert flops_report("L=7,A=10,H=160,R=3.5,d=64")["counts"]["exact"]["flops"] == 2 * tiny


def test_conventions_registry_and_units():
    assert FLOPS_CONVENTIONS.names()[:2] == ["exact", "autodistil"]
    exact, ad = get_flops_convention("exact"), get_flops_convention("autodistil")
    assert exact.to_macs(10) == 5 and ad.to_macs(10) == 10
    assert "2 x multiply-adds" in exact.unit and "multiply-adds" in ad.unit
    with pytest.raises(DistillerError, match="nope"):
        flops("L=2,A=2,H=64,R=2", 16, "nope")
    # an integral float from YAML/JSON is an integer; a fractional layer count is not
    assert shape_dims({"layers": 12.0, "heads": 9, "hidden": 544, "mlp_ratio": 3})["layers"] == 12
    with pytest.raises(DistillerError, match="layers must be an integer"):
        shape_dims("layers=12.5,heads=9,hidden=544,mlp_ratio=3")


# ------------------------------------------------------------------------------------------------------------ budget


def _teacher_config():
    return transformers.BertConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads, 3072 FFN


def test_paper_budget_accepts_the_base_pick_only_in_the_autodistil_convention():
    from autodistil.search import resolve_budget
    from autodistil.subspaces import Arch

    ratio = 4_402_971_712 / 11_249_124_864  # the paper's base pick over BERT-base, both by its formula (1 / 2.555)
    pick = Arch(layers=12, hidden=544, heads=9, mlp_ratio=3.0, head_dim=64)
    budget, teacher = resolve_budget(_teacher_config(), N, "autodistil", budget_ratio=ratio)
    assert teacher == 11_249_124_864 and budget == pytest.approx(4_402_971_712, abs=1e-3)
    assert pick.flops(N, "autodistil") == 4_402_971_712 <= budget
    budget_x, teacher_x = resolve_budget(_teacher_config(), N, "exact", budget_ratio=ratio)
    assert teacher_x == 2 * 11_173_625_856  # exact BERT-base: 12 · 931,135,488 MACs, FLOPs = 2 × MACs
    assert budget_x / 2 == pytest.approx(4.3734e9, rel=1e-4)  # ~4.37 G multiply-adds allowed ...
    assert pick.flops(N, "exact") / 2 == 4_879_024_128 > budget_x / 2  # ... the pick needs 4.88 G: rejected
    # an absolute budget passes through, in the convention's unit
    assert resolve_budget(_teacher_config(), N, "autodistil", budget=5e9) == (5e9, 11_249_124_864)
    with pytest.raises(DistillerError, match="exactly one"):
        resolve_budget(_teacher_config(), N, "autodistil", budget=1.0, budget_ratio=0.5)


def test_builtin_bert_base_space_fits_per_convention():
    from autodistil.search import resolve_budget
    from autodistil.subspaces import BUILTIN_SPACES

    space = BUILTIN_SPACES["bert-base"]  # L 9-12, A 9-12, H 544-640 step 32, R 2.5-4.0 step 0.5
    assert len(space) == 256
    ratio = 4_402_971_712 / 11_249_124_864
    fits = {}
    for conv, own in (("autodistil", lambda a: paper_macs(a.layers, a.heads, a.hidden, a.mlp_ratio)),
                      ("exact", lambda a: 2 * exact_macs(a.layers, a.heads, a.hidden, a.mlp_ratio))):
        budget, _ = resolve_budget(_teacher_config(), N, conv, budget_ratio=ratio)
        for a in space:
            assert a.flops(N, conv) == own(a)
        fits[conv] = {a for a in space if own(a) <= budget}
    assert len(fits["autodistil"]) == 75 and len(fits["exact"]) == 35
    assert fits["exact"] < fits["autodistil"]  # exact counts every narrow student dearer
    smallest = min(space, key=lambda a: (a.layers, a.heads, a.hidden, a.mlp_ratio))
    assert paper_macs(9, 9, 544, 2.5) == smallest.flops(N, "autodistil") == 2_970_780_736  # "2.97 G" (seeds table)
    assert paper_macs(12, 12, 640, 4) == max(a.flops(N, "autodistil") for a in space) == 7_853_835_520  # "7.85 G"


# --------------------------------------------------------------------------------------------------------------- CLI


BASE_ARCH = "layers=12,heads=9,hidden=544,mlp_ratio=3"


def test_cli_flops_prints_the_count(capsys):
    from autodistil.cli import main

    assert main(["flops", "--arch", BASE_ARCH, "--seq-len", "128", "--flops-convention", "autodistil"]) == 0
    out = capsys.readouterr().out
    assert "4,402,971,712" in out and "autodistil" in out and "4.403 G multiply-adds" in out
    assert "9,758,048,256" in out and "1.108x" in out  # exact: 2 × 4,879,024,128
    assert main(["flops", "--arch", BASE_ARCH, "--seq-len", "128", "--flops-convention", "autodistil",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flops"] == 4_402_971_712 and report["convention"] == "autodistil" and report["seq_len"] == 128
    assert report["counts"]["exact"]["flops"] == 9_758_048_256 and report["exact_over_autodistil"] == 1.1081
    assert report["arch"] == "layers=12,hidden=544,heads=9,mlp_ratio=3,head_dim=64"


@pytest.mark.parametrize("argv,message", [
    (["flops", "--arch", BASE_ARCH, "--flops-convention", "paper"], "paper"),
    (["flops", "--arch", "layers=12,heads=9"], "arch misses key(s) hidden, mlp_ratio"),
    (["flops", "--arch", "layers=12,heads=9,hidden=544,mlp_ratio=3,widht=2"], "widht"),
    (["flops", "--arch", "layers=x,heads=9,hidden=544,mlp_ratio=3"], "arch"),
    (["flops", "--arch", BASE_ARCH, "--seq-len", "0"], "seq_len"),
    (["spaces", "--flops-convention", "paper"], "paper"),
])
def test_cli_flops_bad_input_is_one_line_error(argv, message, capsys):
    from autodistil.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_cli_spaces_in_the_autodistil_convention(capsys):
    from autodistil.cli import main

    assert main(["spaces", "--max-length", "128", "--flops-convention", "autodistil"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    base = rows["bert-base"]
    assert base["flops_convention"] == "autodistil" and "multiply-adds" in base["unit"]
    assert (base["min_flops"], base["max_flops"]) == (paper_macs(9, 9, 544, 2.5), paper_macs(12, 12, 640, 4))
    tiny = rows["bert-tiny"]  # L 4-7, A 7-10, H 128-224, R 2.0-3.5: "0.07-0.52 G"
    assert (round(tiny["min_flops"] / 1e9, 2), round(tiny["max_flops"] / 1e9, 2)) == (0.07, 0.52)
    assert tiny["min_flops"] == paper_macs(4, 7, 128, 2.0)
