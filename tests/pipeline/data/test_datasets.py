"""Octant-flattened cached datasets, the reference's class weights and the loss choices."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Lambdad, Transform

from pipeline.data.datasets import FlattenedDataset, volume_dataset
from pipeline.training.losses import make_loss, reference_class_weights
from transforms import Octantsd


def _volumes(n=3):
    data = []
    for i in range(n):
        lab = torch.zeros(1, 8, 8, 8)
        lab[:, :4, :4, : 2 + i] = 1  # lung in the (x<4, y<4) octants only, growing with i
        data.append({"image": torch.full((1, 8, 8, 8), float(i)), "label": lab, "uid": f"case{i}"})
    return data


def test_flattened_dataset_indexes_kept_octants_of_every_volume():
    xf = Octantsd(keys=["image", "label"], label_key="label", split=(2, 2, 2), drop_empty=True)
    ds = FlattenedDataset(_volumes(), xf, sample_transform=[Lambdad("image", lambda x: x + 100)], cache="memory")
    # case0/1 have lung in z<4 only (1 octant); case2 too (z < 4): each keeps one octant
    assert len(ds) == 3
    assert [ds.volume_of(k) for k in range(len(ds))] == [0, 1, 2]
    s = ds[2]
    assert s["image"].shape == (1, 4, 4, 4) and float(s["image"].max()) == 102.0  # sample transform applied
    assert s["uid"] == "case2" and s["octant"] == 0
    full = FlattenedDataset(_volumes(), Octantsd(keys=["image", "label"], drop_empty=False), cache="none")
    assert len(full) == 24


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_cache_modes_give_the_same_samples(tmp_path, cache):
    xf = Octantsd(keys=["image", "label"], label_key="label")
    ds = FlattenedDataset(_volumes(), xf, cache=cache, cache_dir=tmp_path / "c")
    assert len(ds) == 3 and torch.equal(torch.as_tensor(ds[1]["label"]), torch.as_tensor(_volumes()[1]["label"])[:, :4, :4, :4])


def test_volume_dataset_rejects_bad_cache_arguments():
    with pytest.raises(ValueError, match="cache must be one of"):
        volume_dataset([], None, cache="ram")
    with pytest.raises(ValueError, match="cache_dir"):
        volume_dataset([], None, cache="disk")


def test_reference_class_weights_use_the_whole_volume_fraction():
    ds = FlattenedDataset(_volumes(), Octantsd(keys=["image", "label"]), cache="none")
    # volume foreground fractions: 4*4*(2+i) / 512 for i = 0, 1, 2; one sample per volume
    m = sum(16 * (2 + i) / 512 for i in range(3)) / 3
    w = reference_class_weights(ds)
    assert w == pytest.approx([m / (1 + m), 1 / (1 + m)])
    assert sum(w) == pytest.approx(1.0)


def test_weighted_ce_equals_the_reference_weighted_nll():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, 4)
    label = (torch.rand(2, 1, 4, 4, 4) > 0.7).long()
    w = [0.1, 0.9]
    ours = make_loss("ce", w)(logits, label)
    # the reference: log_softmax, channels last, flatten, F.nll_loss(weight=...)
    ref = torch.nn.functional.nll_loss(
        torch.log_softmax(logits, 1).permute(0, 2, 3, 4, 1).reshape(-1, 2), label.reshape(-1), weight=torch.tensor(w)
    )
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    for name in ("dice", "dicece"):
        assert torch.isfinite(make_loss(name, w)(logits, label))
    # the Dice losses, written out: foreground softmax p, label g, per sample, then the batch mean
    p, g = torch.softmax(logits, 1)[:, 1], label[:, 0].float()
    inter = (p * g).sum((1, 2, 3))
    plain = 1 - (2 * inter + 1e-5) / (p.sum((1, 2, 3)) + g.sum((1, 2, 3)) + 1e-5)
    squared = 1 - (2 * inter + 1e-5) / ((p**2).sum((1, 2, 3)) + (g**2).sum((1, 2, 3)) + 1e-5)
    assert make_loss("dice")(logits, label).item() == pytest.approx(plain.mean().item(), rel=1e-5)
    assert make_loss("dice_squared")(logits, label).item() == pytest.approx(squared.mean().item(), rel=1e-5)
    assert squared.mean().item() != pytest.approx(plain.mean().item(), rel=1e-3)
    with pytest.raises(ValueError, match="loss must be one of"):
        make_loss("focal")


def _failing_for(uid):
    def xf(d):
        if d["uid"] == uid:
            raise ValueError(f"cannot read {uid}.mhd")
        return Octantsd(keys=["image", "label"])(d)

    return xf


def test_a_case_that_fails_to_load_is_reported_once_and_excluded(caplog):
    with caplog.at_level("ERROR", logger="pipeline.data.datasets"):
        ds = FlattenedDataset(_volumes(), _failing_for("case1"), cache="memory")
    assert len(ds) == 2 and [ds[k]["uid"] for k in range(2)] == ["case0", "case2"]
    assert ds.bad_cases == [("case1", "ValueError: cannot read case1.mhd")]
    assert sum("case1 is excluded" in r.message for r in caplog.records) == 1


def test_too_many_bad_cases_stop_with_a_summary():
    from transforms.errors import InputError

    with pytest.raises(InputError, match=r"1 of 3 cases could not be used \(limit max_bad_cases = 0\).*case1"):
        FlattenedDataset(_volumes(), _failing_for("case1"), cache="none", max_bad_cases=0)


# ------------------------------------------------------------------ several processes: shares, sampler, shared cache
class _Counting(Transform):
    """Octants of a volume; appends each uid it prepares to ``log`` (a file: works across processes)."""

    def __init__(self, log, delay_s: float = 0.0):
        self.log, self.delay_s = log, delay_s

    def __call__(self, d):
        import time

        time.sleep(self.delay_s)
        with open(self.log, "a") as f:
            f.write(d["uid"] + "\n")
        return Octantsd(keys=["image", "label"], label_key="label", drop_empty=False)(d)


def test_a_sharded_memory_dataset_prepares_and_holds_only_its_share(tmp_path):
    log = tmp_path / "prepared.txt"
    shares = [FlattenedDataset(_volumes(5), _Counting(log), shard=True, rank=r, world_size=2) for r in range(2)]
    assert [s.partitioned for s in shares] == [True, True]
    assert [[d["uid"] for d in s.data] for s in shares] == [["case0", "case2", "case4"], ["case1", "case3"]]
    assert sorted(log.read_text().split()) == [f"case{i}" for i in range(5)]  # each case prepared once
    assert [len(s) for s in shares] == [24, 16] and {shares[1][k]["uid"] for k in range(16)} == {"case1", "case3"}
    # fewer cases than processes: every process takes every case
    few = FlattenedDataset(_volumes(1), _Counting(tmp_path / "few.txt"), shard=True, rank=1, world_size=2)
    assert not few.partitioned and len(few.data) == 1
    # a share without any usable case is an error, not a hang
    from transforms.errors import InputError

    with pytest.raises(InputError, match="process 1 of 2 has no usable case"):
        FlattenedDataset(_volumes(2), _failing_for("case1"), shard=True, rank=1, world_size=2)


def test_shard_sampler_shuffles_a_share_per_epoch_and_pads_it_to_the_largest_share(tmp_path):
    from pipeline.data.datasets import ShardSampler

    share = FlattenedDataset(_volumes(5), _Counting(tmp_path / "p.txt"), shard=True, rank=1, world_size=2)
    share.samples_per_process = 24  # the largest share (rank 0's 24 samples against this one's 16)
    sampler = ShardSampler(share, shuffle=True, seed=7)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 24 and set(order) == set(range(16))  # every sample, then repeats
        assert sorted(order[:16]) == list(range(16))  # one full permutation first
        epochs.append(order)
    assert epochs[0] != epochs[1] != epochs[2]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]
    other = ShardSampler(share, shuffle=True, seed=7, rank=0)
    other.set_epoch(1)
    assert list(other) != epochs[1]  # each process its own order
    assert list(ShardSampler(share, shuffle=False, even_divisible=False)) == list(range(16))
    # a dataset of every case: exactly MONAI's DistributedSampler
    from monai.data import DistributedSampler

    whole = FlattenedDataset(_volumes(3), _Counting(tmp_path / "w.txt"))
    for rank in range(2):
        ours, monai_sampler = (cls(whole, shuffle=True, seed=3, num_replicas=2, rank=rank)
                               for cls in (ShardSampler, DistributedSampler))
        ours.set_epoch(2)
        monai_sampler.set_epoch(2)
        assert list(ours) == list(monai_sampler)


def _build_in_child(cache_dir, log, data, delay_s, cls_name):
    from monai.data import PersistentDataset

    from pipeline.data.datasets import SharedCacheDataset

    cls = {"ours": SharedCacheDataset, "monai": PersistentDataset}[cls_name]
    ds = cls(data=data, transform=_Counting(log, delay_s), cache_dir=cache_dir)
    for i in range(len(ds)):
        ds[i]


@pytest.mark.parametrize("cls_name", ["ours", "monai"])
def test_a_disk_cache_built_by_three_processes_at_once_is_built_once(tmp_path, cls_name):
    import multiprocessing

    data = _volumes(2)
    log = tmp_path / "prepared.txt"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_child, args=(tmp_path / "cache", log, data, 0.3, cls_name))
             for _ in range(3)]
    (tmp_path / "cache").mkdir()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    prepared = sorted(log.read_text().split())
    if cls_name == "monai":  # the negative control: MONAI's PersistentDataset computes a missed file in every process
        assert len(prepared) > 2
        return
    assert prepared == ["case0", "case1"]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert len(files) == 2 and not list((tmp_path / "cache").glob(".*.tmp"))
    from pipeline.data.datasets import SharedCacheDataset

    reread = SharedCacheDataset(data=data, transform=_Counting(log), cache_dir=tmp_path / "cache")
    assert torch.equal(torch.as_tensor(reread[1][0]["label"]), torch.as_tensor(data[1]["label"])[:, :4, :4, :4])
    assert len(log.read_text().split()) == 2  # read back, not prepared again


def _shared_disk_rank(rank, world, store_file, data, cache_dir, log, out):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(store_file), world), rank=rank, world_size=world)
    ds = FlattenedDataset(data, _Counting(log), cache="disk", cache_dir=cache_dir, shard=True)
    out.write_text(json.dumps({"partitioned": ds.partitioned, "uids": sorted({ds[k]["uid"] for k in range(len(ds))}),
                               "n": len(ds)}))
    dist.destroy_process_group()


def test_a_shared_disk_cache_is_built_once_by_two_processes_and_read_by_both(tmp_path):
    import json
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "prepared.txt"
    data = _volumes(5)  # one datalist for both (the cache key hashes an item; tensors pickle per object)
    procs = [ctx.Process(target=_shared_disk_rank, args=(r, 2, tmp_path / "store", data, tmp_path / "cache", log,
                                                         tmp_path / f"rank{r}.json")) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(log.read_text().split()) == [f"case{i}" for i in range(5)]  # each case prepared once, in all
    for r in results:  # ... and every process indexes every case: samples shuffle across the whole set
        assert not r["partitioned"] and r["uids"] == [f"case{i}" for i in range(5)] and r["n"] == 40
    assert len([f for f in (tmp_path / "cache").iterdir() if f.suffix == ".pt" and not f.name.startswith(".")]) == 5
