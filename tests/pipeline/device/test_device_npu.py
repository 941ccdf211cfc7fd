"""pipeline.device on an emulated NPU (tests/fake_npu.py), each case in its own subprocess.

The emulation renames PrivateUse1 to "npu" process-wide and for good, so it is never installed in
the pytest process: every test writes a script to ``tmp_path``, runs it with ``sys.executable`` (or
under ``torchrun``), and checks its exit code and the ``RESULT {json}`` line(s) it prints. What the
fake cannot show: NPU numerics and real fp16 casting (its autocast is a fall-through, ops stay
fp32), HCCL itself, CANN. Those are for ``@pytest.mark.npu`` tests on hardware.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import fake_npu

pytestmark = pytest.mark.skipif(
    bool(fake_npu.missing_private_apis()),
    reason=f"fake NPU needs private torch APIs missing here: {fake_npu.missing_private_apis()}",
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT_S = 120
RESULT_PREFIX = "RESULT "
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK_ID",
               "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID")  # fmt: skip
PREAMBLE = f"""
import json, os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests import fake_npu
fake_npu.install()
import torch
from pipeline import device as dv


def emit(**values):
    print({RESULT_PREFIX!r} + json.dumps(values), flush=True)
"""


def _run(tmp_path: Path, body: str, *, env: dict[str, str] | None = None, torchrun_procs: int = 0) -> list[dict]:
    """Run PREAMBLE + body in a fresh interpreter (under torchrun when ``torchrun_procs``); its RESULT lines."""
    script = tmp_path / "child.py"
    script.write_text(PREAMBLE + textwrap.dedent(body))
    child_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    child_env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})})
    command = [sys.executable, str(script)]
    if torchrun_procs:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun_procs}"]
    proc = subprocess.run(
        command, cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    from tests.fake_npu import parse_results

    results = parse_results(proc.stdout, RESULT_PREFIX)
    assert results, f"no {RESULT_PREFIX!r} line in:\n{proc.stdout[-3000:]}"
    return results


def test_selection_on_fake_npu(tmp_path: Path) -> None:
    body = """
    out = {"ensure": dv.ensure_npu_backend(), "auto": dv.detect_device_type(), "npu": dv.detect_device_type("npu")}
    dev = dv.setup_device()                                   # LOCAL_RANK=3
    out.update(local_rank_dev=str(dev), current=torch.npu.current_device())
    out["by_id"] = str(dv.setup_device("npu", device_id=1))
    out["current_by_id"] = torch.npu.current_device()
    out["accelerator"] = str(torch.accelerator.current_accelerator())
    out["backend"] = dv.dist_backend(dev)
    out["backend_override"] = dv.dist_backend(dev, "hccl")
    out["describe"] = dv.describe(torch.device("npu", 0))
    out["memory"] = dv.max_memory_allocated(dev)
    dv.synchronize(dev)
    for name, call in {"out_of_range": lambda: dv.setup_device("npu", device_id=4),
                       "negative": lambda: dv.setup_device("npu", device_id=-1),
                       "cuda": lambda: dv.detect_device_type("cuda")}.items():
        try:
            call()
            out[name] = None
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    # an Ascend ModelZoo-style launch: no torchrun variables, RANK_ID/RANK_SIZE/ASCEND_DEVICE_ID instead
    del os.environ["LOCAL_RANK"]
    os.environ.update(RANK_ID="1", RANK_SIZE="2", ASCEND_DEVICE_ID="2")
    out["legacy_dev"] = str(dv.setup_device("auto"))
    out["legacy_env"] = [os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")]
    out["legacy_rank"] = [dv.get_rank(), dv.get_world_size(), dv.is_main_process()]
    emit(**out)
    """
    (result,) = _run(tmp_path, body, env={"LOCAL_RANK": "3", fake_npu.DEVICE_COUNT_ENV: "4"})
    assert result["ensure"] is True and result["auto"] == "npu" and result["npu"] == "npu"
    assert (result["local_rank_dev"], result["current"]) == ("npu:3", 3)
    assert (result["by_id"], result["current_by_id"]) == ("npu:1", 1)
    assert result["accelerator"] == "npu"
    assert result["backend"] == result["backend_override"] == "cpu:gloo,npu:hccl"
    assert result["describe"] == f"npu:0 ({fake_npu.DEVICE_NAME})"
    assert result["memory"] == 0
    assert result["out_of_range"] == "DeviceError: npu index 4 is out of range: 4 npu device(s) visible"
    assert result["negative"].startswith("InputError: --device_id -1")
    assert result["cuda"].startswith("DeviceError: --device cuda")
    assert result["legacy_dev"] == "npu:2"
    assert result["legacy_env"] == ["1", "2", "2"]
    assert result["legacy_rank"] == [1, 2, False]


def test_amp_training_step_on_fake_npu(tmp_path: Path) -> None:
    body = """
    dev = dv.setup_device("npu")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 2, 1)).to(dev)
    settings = dv.amp_settings(dev, amp=True, opt_level="O2", loss_scale="dynamic")
    if settings.keep_norm_fp32:
        dv.keep_norm_in_fp32(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = dv.grad_scaler(dev, enabled=settings.enabled, dtype=settings.dtype, loss_scale=settings.loss_scale)
    batch = torch.randn(2, 1, 8, 8, 8).to(dev)

    def step(overflow=False):
        before = [p.detach().cpu().clone() for p in net.parameters()]
        optimizer.zero_grad()
        with dv.autocast(dev, dtype=settings.dtype):
            autocast_on = torch.is_autocast_enabled("npu")
            pred = net(batch)
            loss = pred.float().pow(2).mean()
        scaler.scale(loss * (float("inf") if overflow else 1.0)).backward()
        scaler.step(optimizer)
        scaler.update()
        after = [p.detach().cpu() for p in net.parameters()]
        return {"changed": any(not torch.equal(b, a) for b, a in zip(before, after)), "scale": scaler.get_scale(),
                "autocast": autocast_on, "pred_device": str(pred.device), "loss": float(loss)}

    emit(settings=[str(settings.dtype), settings.keep_norm_fp32, settings.loss_scale],
         param_devices=sorted({str(p.device) for p in net.parameters()}), batch_device=str(batch.device),
         scaler=type(scaler).__name__, clean=step(), overflow=step(overflow=True),
         static=[type(s).__name__ for s in [dv.grad_scaler(dev, loss_scale=128)]],
         grad_devices=sorted({str(p.grad.device) for p in net.parameters()}))
    """
    (result,) = _run(tmp_path, body)
    assert result["settings"] == ["torch.float16", True, "dynamic"]
    assert result["param_devices"] == ["npu:0"] and result["batch_device"] == "npu:0"
    assert result["grad_devices"] == ["npu:0"]
    assert result["scaler"] == "GradScaler" and result["static"] == ["StaticGradScaler"]
    clean, overflow = result["clean"], result["overflow"]
    assert clean["autocast"] is True and clean["pred_device"] == "npu:0"
    assert clean["changed"] is True and clean["scale"] == 2.0**16 and clean["loss"] > 0
    assert overflow["changed"] is False and overflow["scale"] == 2.0**15  # skipped, backed off


def test_torchrun_ddp_over_fake_hccl(tmp_path: Path) -> None:
    body = """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = dv.setup_device("auto")
    distributed = dv.init_distributed(dev)
    rank = dv.get_rank()

    def make_net():
        torch.manual_seed(0)  # identical initial weights on every rank
        return torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(2, 2, 1))

    def train_step(net):
        data = torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(100 + rank)).to(dev)  # per rank
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        net(data).pow(2).mean().backward()
        optimizer.step()
        return torch.cat([p.detach().cpu().flatten() for p in net.parameters()]).tolist()

    ddp = DDP(make_net().to(dev), device_ids=[dev.index])
    ddp_params = train_step(ddp)
    plain_params = train_step(make_net().to(dev))                     # negative control: no DDP
    emit(rank=rank, world=dv.get_world_size(), main=dv.is_main_process(), distributed=distributed,
         device=str(dev), current=torch.npu.current_device(), backend=dist.get_backend(),
         param_device=str(next(ddp.parameters()).device), ddp=ddp_params, plain=plain_params,
         hccl=dict(fake_npu.HCCL_OPS))
    dv.cleanup_distributed()
    emit(rank=rank, after_cleanup=dist.is_initialized())
    """
    results = _run(tmp_path, body, torchrun_procs=2)
    runs = sorted((r for r in results if "ddp" in r), key=lambda r: r["rank"])
    assert [r["rank"] for r in runs] == [0, 1]
    for rank, run in enumerate(runs):
        assert run["world"] == 2 and run["distributed"] is True and run["main"] is (rank == 0)
        assert run["device"] == run["param_device"] == f"npu:{rank}" and run["current"] == rank
        assert run["backend"] == "cpu:gloo,npu:hccl"
        assert run["hccl"].get("allreduce", 0) >= 1 and run["hccl"].get("broadcast", 0) >= 1
    import torch

    ddp0, ddp1 = (torch.tensor(r["ddp"]) for r in runs)
    plain0, plain1 = (torch.tensor(r["plain"]) for r in runs)
    assert torch.equal(ddp0, ddp1)  # DDP keeps the replicas identical
    assert not torch.allclose(plain0, plain1)  # without DDP, different data -> different weights
    # same start, plain SGD: averaging the gradients == averaging the single-rank results
    torch.testing.assert_close(ddp0, (plain0 + plain1) / 2, rtol=1e-5, atol=1e-6)
    assert sorted(r["after_cleanup"] for r in results if "after_cleanup" in r) == [False, False]
