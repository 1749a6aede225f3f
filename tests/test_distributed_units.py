"""In-process regression tests of the multi-process fixes (the 2-process runs are in ``test_distributed.py``):
samplers that shard evenly, precision decided per device, one Accelerator state per process, clear errors for a
misconfigured launch and for ``hpo`` under several processes, SyncBatchNorm on several GPUs."""

import types

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard

from distiller_nlp.core.engine import GroupedBatchSampler, LengthGroupedBatchSampler
from distiller_nlp.core.engine import precision as prec
from distiller_nlp.core.errors import DistillerError


def shard_batches(sampler, num_processes=2):
    """The batches every rank gets from accelerate's ``BatchSamplerShard`` (what ``prepare`` wraps a loader in)."""
    return [list(BatchSamplerShard(sampler, num_processes, i, split_batches=False, even_batches=True))
            for i in range(num_processes)]


@pytest.mark.parametrize("batch_size", [16, 15, 9])
def test_grouped_sampler_shards_evenly_when_batch_size_is_not_a_multiple_of_k(batch_size):
    """Failure 1: k = 3 copies per example and batch 16 -> true batches of 15; the sampler used to report 16, so
    BatchSamplerShard saw every batch as short and the ranks got different batch counts (a hang)."""
    groups = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(40)]
    sampler = GroupedBatchSampler(groups, batch_size, seed=1)
    assert sampler.batch_size == (batch_size // 3) * 3
    per_rank = shard_batches(sampler)
    assert len(per_rank[0]) == len(per_rank[1]) == len(BatchSamplerShard(sampler, 2, 0, even_batches=True))
    seen = {i for rank in per_rank for b in rank for i in b}
    assert seen == set(range(120))
    for rank in per_rank:  # whole groups stay together
        for b in rank:
            assert all(i // 3 == b[j - j % 3] // 3 for j, i in enumerate(b))


def test_grouped_sampler_rejects_unequal_groups():
    with pytest.raises(DistillerError, match="same number of copies"):
        GroupedBatchSampler([[0, 1], [2]], 4)


@pytest.mark.parametrize("epoch", range(8))
def test_length_grouped_sampler_loses_no_batch_under_sharding(epoch):
    """Failure 2: the short batch was shuffled into the middle, where BatchSamplerShard takes it for the end of the
    data and drops a round; len(loader) was then one too high in about half the epochs."""
    lengths = torch.randint(3, 60, (74,), generator=torch.Generator().manual_seed(epoch)).tolist()
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=3, mega=2)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) and all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) == 2
    per_rank = shard_batches(sampler)
    expected = len(BatchSamplerShard(sampler, 2, 0, even_batches=True))
    assert len(per_rank[0]) == len(per_rank[1]) == expected == 5
    assert {i for rank in per_rank for b in rank for i in b} == set(range(74))


# ------------------------------------------------------------------------------------------------ precision

@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability is present (no CUDA call reaches the driver)."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: including_emulation or capability[0] >= 8)
    return install


@pytest.mark.parametrize("capability,expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                 ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_per_gpu(fake_gpu, capability, expected):
    """auto = bf16 where the GPU runs it natively (sm80+), fp16 with loss scaling below (V100 sm70, T4 sm75), even
    though ``is_bf16_supported()`` says yes there by emulation."""
    fake_gpu(capability)
    assert prec.resolve_precision("auto") == expected
    assert prec.bf16_is_fast(True) is (expected == "bf16")
    assert prec.resolve_precision("auto", cpu=True) in ("bf16", "no")  # --cpu: the CPU decides
    assert prec.resolve_precision("fp16") == "fp16"


def test_auto_precision_on_cpu_follows_the_probe(monkeypatch):
    """auto on a CPU = the probe's verdict (measured fp32 / bf16 ratio >= 1.05 -> bf16), never a flag alone."""
    from distiller_nlp.core.engine import precision_probe as pp

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for verdict in ("bf16", "no"):
        monkeypatch.setattr(pp, "decide", lambda shapes=None, broadcast=None, is_main=True, v=verdict: v)
        assert prec.resolve_precision("auto") == verdict
    with pytest.raises(DistillerError, match="fp16 needs a CUDA GPU"):
        prec.resolve_precision("fp16")


def test_a_second_command_in_one_process_may_use_another_precision(monkeypatch):
    """Failure 8: ``run`` with a teacher stage in ``auto`` (= bf16 on a CPU with fast bf16) and ``--precision no``
    for the student made accelerate raise "AcceleratorState has already been initialized"."""
    from accelerate.state import AcceleratorState

    from distiller_nlp.core.train_args import TrainArgs

    from distiller_nlp.core.engine import precision_probe as pp

    monkeypatch.setattr(pp, "decide", lambda shapes=None, broadcast=None, is_main=True: "bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    AcceleratorState._reset_state(reset_partial_state=True)
    first = prec.make_accelerator(TrainArgs(precision="auto", report_to="none"))
    assert first.mixed_precision == "bf16"
    second = prec.make_accelerator(TrainArgs(precision="no", report_to="none"))
    assert second.mixed_precision == "no"
    third = prec.make_accelerator(TrainArgs(precision="bf16", report_to="none"))
    assert third.mixed_precision == "bf16"
    AcceleratorState._reset_state(reset_partial_state=True)


# ------------------------------------------------------------------------------------------------ misuse

def test_world_size_without_a_process_group_is_a_clear_error(monkeypatch):
    from distiller_nlp.core.distributed import check_launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistillerError, match="WORLD_SIZE=2 but this process runs alone.*--multi_gpu"):
        check_launch(1)
    check_launch(2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_launch(1)


def test_hpo_refuses_several_processes(monkeypatch, tmp_path, capsys):
    """Failure 7: under ``accelerate launch`` every rank ran its own study under one worker id."""
    from distiller_nlp.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["hpo", "--trials", "2", "--output-dir", str(tmp_path / "hpo")])
    err = capsys.readouterr().err
    assert code == 2 and "hpo runs as one process" in err and "--storage" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "hpo").exists()


def test_sync_batchnorm_only_on_several_gpus():
    from distiller_nlp.core.distributed import sync_batchnorm

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))

    gpus = types.SimpleNamespace(num_processes=2, device=torch.device("cuda", 1))
    assert isinstance(sync_batchnorm(net(), gpus)[1], torch.nn.SyncBatchNorm)
    for acc in (types.SimpleNamespace(num_processes=1, device=torch.device("cuda", 0)),
                types.SimpleNamespace(num_processes=2, device=torch.device("cpu"))):
        assert type(sync_batchnorm(net(), acc)[1]) is torch.nn.BatchNorm2d


def test_params_checksum_tells_models_apart():
    from distiller_nlp.core.distributed import params_checksum

    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(params_checksum(a), params_checksum(b))
    with torch.no_grad():
        b.weight[0, 0] += 1e-4
    assert not torch.equal(params_checksum(a), params_checksum(b))


def test_loader_order_is_the_same_on_every_rank_whatever_the_global_seed():
    """Dropout streams are seeded per rank (seed + rank); the shuffling must not follow: accelerate seeds its sampler
    from torch.initial_seed() unless data_seed is set, and ranks would shard different permutations."""
    from torch.utils.data import DataLoader

    from distiller_nlp.core.engine.samplers import seeded_generator
    from distiller_nlp.core.train_args import TrainArgs

    orders = []
    for global_seed in (42, 43):
        torch.manual_seed(global_seed)
        acc = prec.make_accelerator(TrainArgs(precision="no", report_to="none", seed=7, cpu=True))
        loader = acc.prepare(DataLoader(list(range(50)), batch_size=8, shuffle=True, generator=seeded_generator(7)))
        orders.append([b.tolist() for b in loader])
    assert orders[0] == orders[1]


def test_all_reduce_mean_averages_over_ranks(monkeypatch):
    """EMD costs are averaged over ranks before the transport problem (every rank then keeps the same layer
    weights); simulated here with a second rank whose costs are 3x ours."""
    import torch.distributed as dist

    from distiller_nlp.core.distributed import all_reduce_mean

    cost = torch.tensor([[1.0, 2.0], [4.0, 8.0]], dtype=torch.float64)
    assert all_reduce_mean(cost) is cost  # one process: unchanged
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, group=None: t.add_(3 * cost))
    torch.testing.assert_close(all_reduce_mean(cost), 2 * cost)


def test_augmenter_models_go_to_this_ranks_gpu(monkeypatch):
    """Contextual / back-translation models: ``auto`` and ``cuda`` mean this rank's GPU (cuda:<LOCAL_RANK>), which
    is also the cache key; before, every rank loaded onto cuda:0."""
    from accelerate.state import PartialState

    from distiller_nlp.augment.contextual import pick_device

    monkeypatch.setattr(PartialState, "_shared_state", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("auto") == pick_device("cuda") == "cuda:1"
    assert pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(DistillerError, match="no CUDA GPU"):
        pick_device("cuda")


def test_sharded_offline_augmentation_equals_one_process(monkeypatch):
    """Offline augmentation under N processes: each rank augments a contiguous shard with the examples' global
    seeds and all ranks get every shard — the same rows (and fingerprint) as one process."""
    import datasets

    import distiller_nlp.augment.registry as reg

    ds = datasets.Dataset.from_dict({"text": [f"the movie number {i} was really good" for i in range(11)],
                                     "label": [i % 2 for i in range(11)]})
    one = reg.augment_dataset(ds, ["random"], aug_p=0.5, seed=3)
    shards = {}
    for rank in range(3):
        monkeypatch.setattr(reg, "_process_share", lambda rank=rank: (rank, 3))
        monkeypatch.setattr("accelerate.utils.gather_object", lambda obj, rank=rank: shards.setdefault(rank, obj))
        reg.augment_dataset(ds, ["random"], aug_p=0.5, seed=3)
    gathered = [shards[r][0] for r in range(3)]
    monkeypatch.setattr(reg, "_process_share", lambda: (0, 3))
    monkeypatch.setattr("accelerate.utils.gather_object", lambda obj: gathered)
    merged = reg.augment_dataset(ds, ["random"], aug_p=0.5, seed=3)
    assert merged["text"] == one["text"] and merged["label"] == one["label"]
    assert merged._fingerprint == one._fingerprint and one["text"] != ds["text"]
