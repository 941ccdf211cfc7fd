"""Multi-process training and evaluation through the bundle under ``torchrun``, on CPU (gloo) and a fake NPU.

Every run is a real ``torchrun`` (or two agents forming a two-node world on loopback) of
``python -m monai.bundle run training`` with ``multi_gpu_train.json`` and a test overlay whose
``training`` list attaches :class:`RankProbe` (defined here, imported by the children) around the
bundle's own ``@train#trainer.run()`` / ``@validate#evaluator.run()``. The probe writes one JSON per rank:
what that rank trained and validated on, a hash of its final weights, the metrics it computed, and every
checkpoint/summary write it made. What these tests cannot show: NCCL/HCCL themselves, real NPU numerics,
multi-node across real hosts (loopback only).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bundle.conftest import CONFIGS, REPO, TINY

pytestmark = pytest.mark.slow

#: tiny_data with this split: 1 training volume (8 octant samples), 3 validation cases (shards of 2 and 1)
SPLIT = ["--val_fraction", "0.5", "--split_seed", "3"]
SMALL = [*TINY, *SPLIT, "--batch_size", "2"]
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "TORCHELASTIC_RUN_ID")  # fmt: skip
RUN_TIMEOUT_S = 300
FAILURE_DEADLINE_S = 120  # a failing rank must end the whole job well within this
EPOCHS = 2


# ------------------------------------------------------------------------------ probe (runs in children)
def state_hash(state: dict[str, Any]) -> str:
    """sha256 over a state dict's keys and tensor bytes (same value <=> same weights and buffers)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankProbe:
    """Records, per rank, what the bundle's engines did; ``dump`` writes ``<out_dir>/rank<r>.json``.

    Args:
        out_dir: folder for the JSON files.
        fail_rank: this rank raises at training iteration ``fail_iteration`` (-1: none does).
        fail_iteration: see ``fail_rank``.
    """

    def __init__(self, out_dir: str, fail_rank: int = -1, fail_iteration: int = 1) -> None:
        import pipeline.training.checkpoints as checkpoints
        import pipeline.training.handlers as handlers

        self.out_dir = Path(out_dir)
        self.rank = int(os.environ.get("RANK", "0"))
        self.fail_rank, self.fail_iteration = fail_rank, fail_iteration
        self.train_seen: dict[int, list[str]] = {}
        self.val_seen: dict[int, list[str]] = {}
        self.val_metrics: list[dict[str, float]] = []
        self.writes: list[str] = []
        self.prepared: list[str] = []  # uid of every case this process preprocessed (see `counter`)
        # every checkpoint / summary write goes through these
        for module, name in ((checkpoints, "atomic_torch_save"), (handlers, "atomic_write_text")):
            setattr(module, name, self._recording(getattr(module, name), path_arg=1 if "torch" in name else 0))

    @property
    def counter(self):
        """A transform to put first in a preprocessing chain: records each case this process prepares."""
        from monai.transforms import Transform

        probe = self

        class Count(Transform):
            def __call__(self, data):
                probe.prepared.append(str(data["uid"]))
                return data

        return Count()

    def _recording(self, original, path_arg: int):
        def write(*args, **kwargs):
            self.writes.append(Path(args[path_arg]).name)
            return original(*args, **kwargs)

        return write

    @staticmethod
    def _ids(batch: dict) -> list[str]:
        uids = batch["uid"]
        octants = batch.get("octant")
        if octants is None:
            return [str(u) for u in uids]
        return [f"{u}:{int(o)}" for u, o in zip(uids, octants)]

    def attach_trainer(self, trainer) -> None:
        from ignite.engine import Events

        @trainer.on(Events.ITERATION_STARTED)
        def _seen(engine):
            self.train_seen.setdefault(engine.state.epoch, []).extend(self._ids(engine.state.batch))
            if self.rank == self.fail_rank and engine.state.iteration == self.fail_iteration:
                raise RuntimeError(f"injected failure on rank {self.rank}")

    def attach_evaluator(self, evaluator) -> None:
        from ignite.engine import Events

        @evaluator.on(Events.ITERATION_STARTED)
        def _seen(engine):
            self.val_seen.setdefault(engine.state.epoch, []).extend(self._ids(engine.state.batch))

        @evaluator.on(Events.EPOCH_COMPLETED)
        def _metrics(engine):  # attached after the metric handlers, so they have run
            self.val_metrics.append({k: float(v) for k, v in engine.state.metrics.items()})

    def dump(self, network, dataset=None, evaluator=None, val_dataset=None) -> None:
        import torch
        import torch.distributed as dist

        from pipeline.files import unwrap_state_dict

        inner = getattr(network, "module", network)
        record = {
            "rank": self.rank,
            "group_rank": int(os.environ.get("GROUP_RANK", "-1")),
            "world": dist.get_world_size() if dist.is_initialized() else 1,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "ddp": type(network).__name__,
            "pid": os.getpid(),
            "torch_seed": torch.initial_seed(),
            "state_hash": state_hash(unwrap_state_dict(network)),
            "params_hash": state_hash(dict(inner.named_parameters())),
            "train_seen": self.train_seen,
            "val_seen": self.val_seen,
            "val_metrics": self.val_metrics,
            "best_metric": None if evaluator is None else float(evaluator.state.best_metric),
            "writes": self.writes,
            "prepared": self.prepared,
            "held_cases": None if dataset is None else [str(d["uid"]) for d in dataset.data],
            "val_held_cases": None if val_dataset is None else [str(d["uid"]) for d in val_dataset.data],
            "partitioned": None if dataset is None else dataset.partitioned,
            "all_samples": [] if dataset is None else [self._ids({k: [v] for k, v in dataset[i].items()
                                                                  if k in ("uid", "octant")})[0]
                                                       for i in range(len(dataset))],
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{self.rank}.json").write_text(json.dumps(record))


# ------------------------------------------------------------------------------------------ helpers
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    return env


def _overlay(path: Path, out_dir: Path, training: list[str], **probe_args: Any) -> Path:
    probe = {"_target_": "tests.bundle.test_distributed.RankProbe", "out_dir": str(out_dir), **probe_args}
    path.write_text(json.dumps({"probe": probe, "training": training}))
    return path


TRAIN_RUN = ["$@probe.attach_trainer(@train#trainer)", "$@probe.attach_evaluator(@validate#evaluator)",
             "$@train#trainer.run()", "$@probe.dump(@network, dataset=@train#dataset, evaluator=@validate#evaluator)"]
EVAL_RUN = ["$@probe.attach_evaluator(@validate#evaluator)", "$@validate#evaluator.run()",
            "$@probe.dump(@network, evaluator=@validate#evaluator)"]


def _bundle_args(files: list[Path | str], data: Path, root: Path, *extra: str) -> list[str]:
    return ["run", "training", "--config_file", repr([str(f) for f in files]), "--dataset_dir", str(data),
            "--bundle_root", str(root), *SMALL, *extra]


def _run(cmd: list[str], timeout: int = RUN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:8])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _torchrun(nproc: int, bundle_args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                 "-m", "monai.bundle", *bundle_args], **kw)


def _ranks(out_dir: Path) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(len(list(out_dir.glob("rank*.json"))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ddp_run(tiny_data, tmp_path_factory) -> dict[str, Any]:
    """2 processes (gloo) train the tiny V-Net for 2 epochs through train.json + multi_gpu_train.json."""
    root = tmp_path_factory.mktemp("ddp")
    overlay = _overlay(root / "probe.json", root / "probe", TRAIN_RUN)
    files = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", overlay]
    proc = _torchrun(2, _bundle_args(files, tiny_data, root, "--epochs", str(EPOCHS), "--reference_log_dir",
                                     str(root / "output")))
    return {"root": root, "ranks": _ranks(root / "probe"), "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def single_eval(ddp_run, tiny_data) -> dict[str, Any]:
    """One process evaluates the DDP run's models/model.pt on the same validation cases."""
    root = ddp_run["root"]
    overlay = _overlay(root / "probe_eval1.json", root / "eval1", EVAL_RUN)
    files = [CONFIGS / "train.json", CONFIGS / "evaluate.json", overlay]
    _run([sys.executable, "-m", "monai.bundle", *_bundle_args(files, tiny_data, root)])
    (record,) = _ranks(root / "eval1")
    return record


# ------------------------------------------------------------------------------------------ CPU / gloo
def test_ddp_keeps_replicas_identical_and_shards_the_data(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert (r0["rank"], r1["rank"], r0["world"], r1["world"]) == (0, 1, 2, 2)
    assert r0["backend"] == r1["backend"] == "gloo" and r0["ddp"] == "DistributedDataParallel"
    assert (r0["torch_seed"], r1["torch_seed"]) == (1, 2)  # seed + rank (train.json's seed is 1)
    # identical parameters, and identical buffers: rank 0's BatchNorm statistics are broadcast before validation
    assert r0["params_hash"] == r1["params_hash"] and r0["state_hash"] == r1["state_hash"]
    # the checkpoint rank 0 wrote is the model every rank holds
    from pipeline.files import load_checkpoint

    ckpt = load_checkpoint(ddp_run["root"] / "models" / "vnet_checkpoint.pth.tar")
    assert state_hash(ckpt["model"]) == r1["state_hash"]
    # training: each epoch the two ranks see disjoint halves of the 8 samples, reshuffled per epoch (set_epoch)
    samples = r0["all_samples"]
    assert len(samples) == len(set(samples)) == 8
    for epoch in map(str, range(1, EPOCHS + 1)):
        s0, s1 = r0["train_seen"][epoch], r1["train_seen"][epoch]
        assert len(s0) == len(s1) == 4 and not set(s0) & set(s1) and set(s0) | set(s1) == set(samples)
    assert r0["train_seen"]["1"] != r0["train_seen"]["2"] or r1["train_seen"]["1"] != r1["train_seen"]["2"]
    # validation: the 3 cases split 2 + 1, no case twice, every epoch
    for epoch in map(str, range(1, EPOCHS + 1)):
        v0, v1 = r0["val_seen"][epoch], r1["val_seen"][epoch]
        assert (len(v0), len(v1)) == (2, 1) and not set(v0) & set(v1)
    # the metric is reduced across ranks: both ranks hold the same value
    assert r0["val_metrics"] == r1["val_metrics"] and len(r0["val_metrics"]) == EPOCHS


def test_only_rank_0_writes_files(ddp_run):
    r0, r1 = ddp_run["ranks"]
    root = ddp_run["root"]
    assert r1["writes"] == []
    assert r0["writes"].count("vnet_checkpoint.pth.tar") == EPOCHS
    assert "model.pt" in r0["writes"] and r0["writes"][-1] == "VNet_bs2_2p_acc.log"
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".")]  # no temporary files left
    events = list((root / "eval" / "tensorboard").glob("events.out.tfevents.*"))
    pids = {int(re.fullmatch(r"events\.out\.tfevents\.\d+\.(.+)\.(\d+)\.\d+", p.name).group(2)) for p in events}
    assert events and pids == {r0["pid"]}  # TensorBoard files: written by rank 0's process only
    # the reference-style files: rank 0's loss per iteration (2 iterations x 2 epochs), one summary
    out = root / "output"
    assert sorted(p.name for p in out.iterdir()) == ["VNet_bs2_2p_acc.log", "train_VNet_bs2_2p_acc_loss.txt"]
    assert len((out / "train_VNet_bs2_2p_acc_loss.txt").read_text().split()) == 2 * EPOCHS
    summary = dict(line.split(" = ") for line in (out / "VNet_bs2_2p_acc.log").read_text().splitlines())
    assert (summary["RankSize"], summary["BatchSize"], summary["CaseName"]) == ("2", "2", "VNet_bs2_2p_acc")
    assert float(summary["FinalValError"]) == pytest.approx(r0["val_metrics"][-1]["val_error"], abs=1e-4)


def test_sharded_validation_equals_one_process_on_the_saved_model(ddp_run, single_eval):
    r0 = ddp_run["ranks"][0]
    one = single_eval["val_metrics"][-1]
    assert single_eval["world"] == 1 and sorted(single_eval["val_seen"]["1"]) == sorted(
        r0["val_seen"]["1"] + ddp_run["ranks"][1]["val_seen"]["1"])
    # model.pt is rank 0's model at the best epoch; the 2-process validation of that epoch scored it exactly
    assert one["val_error"] == pytest.approx(r0["best_metric"], rel=1e-12)
    best_epoch = min(range(EPOCHS), key=lambda e: r0["val_metrics"][e]["val_error"])
    for key in ("val_error", "val_error_volume", "val_mean_dice"):
        assert one[key] == pytest.approx(r0["val_metrics"][best_epoch][key], rel=1e-9, abs=1e-12), key


def test_two_agents_on_loopback_form_a_two_node_world_and_evaluate_alike(ddp_run, single_eval, tiny_data):
    root = ddp_run["root"]
    overlay = _overlay(root / "probe_eval2.json", root / "eval2", EVAL_RUN)
    files = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", CONFIGS / "evaluate.json", overlay]
    port = _free_port()
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
             f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=vnet-loopback", "--local_addr=127.0.0.1",
             "-m", "monai.bundle", *_bundle_args(files, tiny_data, root)]
    logs = [root / f"agent{i}.log" for i in range(2)]
    per_case = root / "eval" / "metrics_per_case.csv"
    per_case.unlink(missing_ok=True)
    agents = [subprocess.Popen(agent, cwd=REPO, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    codes = [a.wait(timeout=RUN_TIMEOUT_S) for a in agents]
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    r0, r1 = _ranks(root / "eval2")
    assert {r0["group_rank"], r1["group_rank"]} == {0, 1} and r0["world"] == r1["world"] == 2
    # the per-case CSV gathers every rank's shard: all 3 validation cases, once each
    uids = [line.split(",")[0] for line in per_case.read_text().splitlines()[1:]]
    assert len(uids) == len(set(uids)) == 3
    assert r0["ddp"] == "DistributedDataParallel" and len(r0["val_seen"]["1"]) + len(r1["val_seen"]["1"]) == 3
    one = single_eval["val_metrics"][-1]
    for rec in (r0, r1):
        for key in ("val_error", "val_error_volume", "val_mean_dice"):
            assert rec["val_metrics"][-1][key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key


# ----------------------------------------------------------------- shares: each case prepared once, 1/N held
COUNTED = {"train#preprocessing#transforms": "$[@probe.counter] + @preprocessing_transforms + [@octants]",
           "validate#preprocessing#transforms": "$[@probe.counter] + @preprocessing_transforms + @intensity_transforms"}


@pytest.fixture(scope="module")
def eight_cases(tmp_path_factory) -> Path:
    from pipeline.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("luna16_8")
    generate_dataset(root, cases=8, seed=5, shape=(64, 64, 40))
    return root


def test_four_processes_each_prepare_and_hold_a_quarter_and_shuffle_their_own_share(eight_cases, tmp_path):
    """torchrun --nproc_per_node=4, memory cache, 4 training + 4 validation cases (split_seed 2)."""
    overlay = tmp_path / "probe.json"
    overlay.write_text(json.dumps({
        "probe": {"_target_": "tests.bundle.test_distributed.RankProbe", "out_dir": str(tmp_path / "probe")},
        **COUNTED,
        "training": [*TRAIN_RUN[:-1], ("$@probe.dump(@network, dataset=@train#dataset, evaluator=@validate#evaluator,"
                                       " val_dataset=@validate#dataset)")]}))
    files = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", overlay]
    args = ["run", "training", "--config_file", repr([str(f) for f in files]), "--dataset_dir", str(eight_cases),
            "--bundle_root", str(tmp_path), *TINY, "--val_fraction", "0.5", "--split_seed", "2", "--batch_size", "2",
            "--epochs", "2", "--val_interval", "2"]
    proc = _torchrun(4, args)
    ranks = _ranks(tmp_path / "probe")
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3] and all(r["partitioned"] for r in ranks)
    train_cases = [c for r in ranks for c in r["held_cases"]]
    val_cases = [c for r in ranks for c in r["val_held_cases"]]
    # each process holds a quarter: one of the 4 training and one of the 4 validation cases, no case twice
    assert [len(r["held_cases"]) for r in ranks] == [len(r["val_held_cases"]) for r in ranks] == [1, 1, 1, 1]
    assert len(set(train_cases)) == len(set(val_cases)) == 4 and not set(train_cases) & set(val_cases)
    # every case preprocessed exactly once in the whole run, by the process that holds it
    prepared = [c for r in ranks for c in r["prepared"]]
    assert sorted(prepared) == sorted(train_cases + val_cases)
    for r in ranks:
        assert sorted(r["prepared"]) == sorted(r["held_cases"] + r["val_held_cases"])
    # training as documented: each process draws its own share's samples, all of them every epoch, in a new
    # order each epoch, padded to the largest share so every process runs the same number of iterations
    largest = max(len(r["all_samples"]) for r in ranks)
    for r in ranks:
        own = set(r["all_samples"])
        assert {s.split(":")[0] for s in own} == set(r["held_cases"])
        for epoch in ("1", "2"):
            seen = r["train_seen"][epoch]
            assert len(seen) == largest and set(seen) == own
    assert any(r["train_seen"]["1"] != r["train_seen"]["2"] for r in ranks if len(r["all_samples"]) > 1)
    # validation: each process its own case; the metric reduced over all four, the same on every process
    assert all(list(r["val_seen"]) == ["2"] for r in ranks)  # validated once, after epoch 2 (--val_interval 2)
    assert [sorted(r["val_seen"]["2"]) for r in ranks] == [r["val_held_cases"] for r in ranks]
    assert all(r["val_metrics"] == ranks[0]["val_metrics"] for r in ranks)
    assert "this process holds" in proc.stdout + proc.stderr


def test_multi_gpu_evaluate_writes_the_csv_of_one_process(ddp_run, single_eval, tiny_data):
    """torchrun --nproc_per_node=2 with [train.json, multi_gpu_evaluate.json] against one process's evaluate.json."""
    root = ddp_run["root"]
    one_csv = (root / "eval" / "metrics_per_case.csv").read_text()  # written by single_eval (evaluate.json)
    out = root / "eval_2p"
    overlay = root / "probe_eval_2p.json"  # the probe around the "run" list, which `monai.bundle run` executes
    overlay.write_text(json.dumps({"probe": {"_target_": "tests.bundle.test_distributed.RankProbe",
                                             "out_dir": str(root / "eval_2p_probe")}, "run": EVAL_RUN}))
    files = [CONFIGS / "train.json", CONFIGS / "multi_gpu_evaluate.json", overlay]
    args = _bundle_args(files, tiny_data, root, "--output_dir", str(out))
    assert args[:2] == ["run", "training"]
    _torchrun(2, ["run", *args[2:]])  # the documented command: `monai.bundle run` (its "run" list)
    r0, r1 = _ranks(root / "eval_2p_probe")
    assert r0["world"] == r1["world"] == 2 and (len(r0["val_seen"]["1"]), len(r1["val_seen"]["1"])) == (2, 1)
    two = list(csv.DictReader(io.StringIO((out / "metrics_per_case.csv").read_text())))
    one = list(csv.DictReader(io.StringIO(one_csv)))
    assert [r["uid"] for r in two] == [r["uid"] for r in one] and len(one) == 3  # same cases, same order
    for a, b in zip(two, one):
        assert set(a) == set(b) and {"orig_dice", "orig_hd95_mm", "orig_true_volume_ml"} <= set(a)
        for key in a:
            if key != "uid":
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-9, nan_ok=True), key
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["cases"] == 3.0


def test_a_failing_rank_ends_every_rank_quickly(tiny_data, tmp_path):
    overlay = _overlay(tmp_path / "probe.json", tmp_path / "probe", TRAIN_RUN, fail_rank=1, fail_iteration=1)
    files = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", overlay]
    start = time.monotonic()
    proc = _torchrun(2, _bundle_args(files, tiny_data, tmp_path, "--epochs", "3", "--dist_timeout_s", "60"), check=False)
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and elapsed < FAILURE_DEADLINE_S
    assert re.search(r"^\[rank1\]:.*injected failure on rank 1", out, re.MULTILINE)
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out)  # torchrun's failure summary names it
    assert not list(tmp_path.glob("probe/rank*.json"))  # no rank got to the end


# ------------------------------------------------------------------------------------------ fake NPU
FAKE_NPU_PREAMBLE = f"""
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
from tests import fake_npu
fake_npu.install()
import torch
"""


def _fake_npu_child(tmp_path: Path, body: str, nproc: int = 0) -> list[dict]:
    from tests import fake_npu

    if fake_npu.missing_private_apis():
        pytest.skip(f"fake NPU needs private torch APIs missing here: {fake_npu.missing_private_apis()}")
    script = tmp_path / "child.py"
    script.write_text(FAKE_NPU_PREAMBLE + textwrap.dedent(body))
    cmd = [sys.executable, str(script)]
    if nproc:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = _run(cmd)
    from tests.fake_npu import parse_results

    return parse_results(proc.stdout, "RESULT ")


def test_bundle_training_path_runs_on_the_fake_npu_with_npu_autocast(tiny_data, tmp_path):
    # The fake's wrapper tensors cannot become MetaTensors (a real torch_npu tensor is a plain Tensor), so the
    # batch is unwrapped before .to(device) and validation (MONAI post-transforms make MetaTensors) is off.
    body = f"""
    from monai.bundle import ConfigWorkflow
    from monai.engines import SupervisedTrainer as MonaiTrainer
    seen = []

    def probe(module, inputs, output):
        seen.append([str(inputs[0].device), torch.is_autocast_enabled("npu"), str(output.device)])

    unwrap = "$lambda b, d, non_blocking=False, **kw: (b['image'].as_tensor().to(d), b['label'].as_tensor().to(d))"
    wf = ConfigWorkflow(config_file=[{str(CONFIGS / 'train.json')!r}], workflow_type="train", dataset_dir={str(tiny_data)!r},
                        bundle_root={str(tmp_path)!r}, vox_spacing=4.0, spatial_size=[32, 32, 32], cache_workers=1,
                        num_workers=0, log_interval=0, batch_size=2, epochs=1, val_interval=2, val_fraction=0.5, split_seed=3,
                        device_name="npu", amp=True, opt_level="O2", **{{"network_def#init_filters": 4,
                        "train#trainer#prepare_batch": unwrap}})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    net = wf.parser.get_parsed_content("network")
    net.register_forward_hook(probe)
    wf.run()
    ours = seen[:]
    params = sorted({{str(p.device) for p in net.parameters()}})
    # negative control: MONAI's stock trainer, same network and device, amp=True
    seen.clear()
    monai_trainer = MonaiTrainer(device=torch.device("npu", 0), max_epochs=1, network=net,
                                 train_data_loader=[{{"image": torch.randn(2, 1, 16, 16, 16),
                                                      "label": torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)}}],
                                 optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=lambda p, y: p.float().mean(),
                                 amp=True)
    monai_trainer.run()
    print("RESULT " + json.dumps(dict(device=str(wf.parser.get_parsed_content("device")), params=params, ours=ours,
                                      monai=seen, dtype=str(trainer.amp_dtype), scaler=type(trainer.scaler).__name__,
                                      iterations=trainer.state.iteration)))
    """
    (result,) = _fake_npu_child(tmp_path, body)
    assert result["device"] == "npu:0" and result["params"] == ["npu:0"]
    assert result["iterations"] == 4 and len(result["ours"]) == 4  # 8 samples, batch 2, one process
    assert all(r == ["npu:0", True, "npu:0"] for r in result["ours"])  # batches on npu, autocast("npu") active
    assert result["dtype"] == "torch.float16" and result["scaler"] == "GradScaler"  # fp16 on npu, dynamic scale
    assert result["monai"] and all(r[1] is False for r in result["monai"])  # stock MONAI: no autocast on npu


def test_metric_reduction_over_mixed_backend_with_npu_tensors(tmp_path):
    # Ranks hold different numbers of cases on "npu"; MONAI gathers through ignite, which sends the lengths as
    # CPU tensors (the gloo part of the backend string) and the buffers as npu tensors (the hccl part).
    body = """
    import torch.distributed as dist
    from monai.handlers import MeanDice
    from pipeline import device as dv
    from pipeline.training.metrics import ErrorRate

    dev = dv.setup_device("npu")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dv.init_distributed(dev)                                 # backend from the device layer

    def case(i):
        g = torch.Generator().manual_seed(i)
        label = (torch.rand(1, 1, 8, 8, 8, generator=g) > 0.5).long()
        pred = label.clone()
        pred[0, 0, : i + 1] = 1 - pred[0, 0, : i + 1]        # case i: i + 1 wrong slices
        onehot = lambda x: torch.cat([1 - x, x], 1).float()
        return onehot(pred), onehot(label)

    cases = [0, 1, 2] if rank == 0 else [3, 4]               # uneven shards
    handlers = {"err": ErrorRate(), "dice": MeanDice(include_background=False, save_details=False)}
    out = {}
    try:
        for name, h in handlers.items():
            h.reset()
            for i in cases:
                p, y = case(i)
                h.update([p.to(dev), y.to(dev)])
            out[name] = float(h.compute())
        single = {}
        for name, h in {"err": ErrorRate(), "dice": MeanDice(include_background=False)}.items():
            h.metric_fn(*map(torch.cat, zip(*[case(i) for i in range(5)])))   # one process, all cases, on CPU
            single[name] = float(h.metric_fn.aggregate().mean())
        out["single"] = single
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out.update(rank=rank, backend=dist.get_backend(), device=str(dev), hccl=dict(fake_npu.HCCL_OPS))
    dv.cleanup_distributed()
    print("RESULT " + json.dumps(out), flush=True)
    """
    results = _fake_npu_child(tmp_path, body, nproc=2)
    assert len(results) == 2
    for r in results:
        assert r["backend"] == "cpu:gloo,npu:hccl" and r["device"] == f"npu:{r['rank']}" and "error" not in r, r
        # ignite moved the npu buffers to idist.device() (the CPU: no CUDA) before gathering, so all of it went over
        # the gloo part of the backend string; with "hccl" alone torch has no backend for CPU tensors
        # (HCCL has no CPU-tensor collectives; this fake's hccl would accept them, so that is not re-tested here)
        assert r["hccl"].get("allgather", 0) + r["hccl"].get("_allgather_base", 0) == 0
        assert r["err"] == pytest.approx(r["single"]["err"], rel=1e-12)
        assert r["dice"] == pytest.approx(r["single"]["dice"], rel=1e-6)
