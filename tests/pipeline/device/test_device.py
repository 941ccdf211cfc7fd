"""pipeline.device on this CPU-only machine, in-process (the fake-NPU paths are in test_device_npu.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline import device as dv
from transforms.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[3]
TORCH_RELEASE = torch.__version__.split("+")[0]
AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
SUBPROCESS_TIMEOUT_S = 120
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
# torch_npu autoloaded with torch (an Ascend box): the "not installed / fails to load" cases cannot happen
no_npu_loaded = pytest.mark.skipif(hasattr(torch, "npu"), reason="torch.npu is already loaded here")
cpu_only = pytest.mark.skipif(
    torch.cuda.is_available() or importlib.util.find_spec("torch_npu") is not None,
    reason="an accelerator stack is installed here",
)


@pytest.fixture(autouse=True)
def _clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------------- selection
@cpu_only
@pytest.mark.parametrize("requested", ["auto", None, "AUTO", " cpu "])
def test_auto_and_cpu_pick_cpu_here(requested: str | None) -> None:
    assert dv.detect_device_type(requested) == "cpu"
    assert dv.setup_device(requested) == torch.device("cpu")


def test_cpu_ignores_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dv.setup_device("cpu", device_id=5) == torch.device("cpu")


@pytest.mark.parametrize("requested", ["gpu", "npu:0", "", "tpu"])
def test_unknown_device_choice(requested: str) -> None:
    with pytest.raises(InputError, match=r"--device .*expected one of auto, cpu, cuda, npu"):
        dv.detect_device_type(requested)


@no_npu_loaded
def test_npu_without_torch_npu_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch_npu" else real_find_spec(name, *a)
    )
    with pytest.raises(dv.DeviceError) as info:
        dv.detect_device_type("npu")
    message = str(info.value)
    assert "\n" not in message
    assert "torch_npu is not installed" in message
    assert f"pip install torch-npu=={TORCH_RELEASE}" in message
    assert not dv.ensure_npu_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not installed is normal: no warning
        assert dv.detect_device_type("auto") in ("cpu", "cuda")


@no_npu_loaded
@pytest.mark.parametrize(
    "exc, text",
    [
        ("OSError", "libhccl.so: cannot open shared object file: No such file or directory"),
        ("ImportError", "libascendcl.so: cannot open shared object file"),
        ("RuntimeError", "Two accelerators cannot be used at the same time"),
    ],
)
@pytest.mark.parametrize("autoload", [None, "1"])
def test_npu_when_torch_npu_fails_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: str, text: str, autoload: str | None
) -> None:
    # A torch_npu that behaves like the real one without CANN: it sets autoload=0, then fails.
    package = tmp_path / "torch_npu"
    package.mkdir()
    (package / "__init__.py").write_text(f"import os\nos.environ[{AUTOLOAD_ENV!r}] = '0'\nraise {exc}({text!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    if autoload is None:
        monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    else:
        monkeypatch.setenv(AUTOLOAD_ENV, autoload)
    with pytest.raises(dv.DeviceError) as info:
        dv.detect_device_type("npu")
    message = str(info.value)
    assert "\n" not in message
    assert f"torch_npu failed to load ({exc}: {text})" in message
    assert "CANN" in message and f"pip install torch-npu=={TORCH_RELEASE}" in message
    assert os.environ.get(AUTOLOAD_ENV) == autoload  # restored after the failed import
    assert "torch_npu" not in sys.modules
    assert not dv.ensure_npu_backend()
    with pytest.warns(RuntimeWarning, match=r"--device auto: torch_npu failed to load .*; using (cpu|cuda)"):
        assert dv.detect_device_type("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@no_cuda
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(dv.DeviceError, match=r"^--device cuda: this torch build has no CUDA|^--device cuda: no CUDA"):
        dv.detect_device_type("cuda")
    with pytest.raises(dv.DeviceError):
        dv.setup_device("cuda")


def test_device_error_is_one_line() -> None:
    assert str(dv.DeviceError("first line\n  second\tline ")) == "first line second line"


def test_importing_project_never_imports_torch_npu(tmp_path: Path) -> None:
    # A findable torch_npu that works when imported: only an import by our code would load it.
    (tmp_path / "torch_npu").mkdir()
    (tmp_path / "torch_npu" / "__init__.py").write_text("")
    script = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import pipeline, pipeline.device as dv
        failed = []
        for name in ("pipeline", "transforms", "networks"):
            try:
                package = importlib.import_module(name)
            except ImportError as exc:
                failed.append(f"{name}: {exc}")
                continue
            for info in pkgutil.walk_packages(package.__path__, name + "."):
                if not info.name.endswith("__main__"):
                    try:
                        importlib.import_module(info.name)
                    except Exception as exc:  # another module's bug is not this test's subject
                        failed.append(f"{info.name}: {type(exc).__name__}")
        checks = [dv.detect_device_type("cpu"), dv.dist_backend("npu"), str(dv.amp_dtype("npu"))]
        print(json.dumps({"torch_npu": "torch_npu" in sys.modules, "failed": failed, "checks": checks}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path)])}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch_npu"] is False, result
    assert result["checks"] == ["cpu", "cpu:gloo,npu:hccl", "torch.float16"]


# ------------------------------------------------------------------------------------ backends
@pytest.mark.parametrize(
    "device, override, expected",
    [
        ("cpu", None, "gloo"),
        (torch.device("cpu"), "", "gloo"),
        ("cpu", "gloo", "gloo"),
        ("cpu", "cpu:gloo", "gloo"),
        ("cuda", None, "cpu:gloo,cuda:nccl"),
        ("cuda:1", "nccl", "cpu:gloo,cuda:nccl"),
        ("cuda", "gloo", "cpu:gloo,cuda:gloo"),
        ("npu", None, "cpu:gloo,npu:hccl"),
        ("npu:3", "hccl", "cpu:gloo,npu:hccl"),
        ("npu", " HCCL ", "cpu:gloo,npu:hccl"),
        ("npu", "lccl", "cpu:gloo,npu:lccl"),
        ("npu", "cpu:gloo,npu:hccl", "cpu:gloo,npu:hccl"),
        ("cuda", "cpu:gloo,cuda:nccl", "cpu:gloo,cuda:nccl"),
    ],
)
def test_dist_backend(device: torch.device | str, override: str | None, expected: str) -> None:
    assert dv.dist_backend(device, override) == expected


@pytest.mark.parametrize(
    "device, override, message",
    [
        ("npu", "nccl", "backend 'nccl' cannot run on 'npu'"),
        ("cpu", "hccl", "backend 'hccl' cannot run on 'cpu'"),
        ("npu", "gloo", "backend 'gloo' cannot run on 'npu'"),
        ("cuda", "hccl", "backend 'hccl' cannot run on 'cuda'"),
        ("npu", "hcll", "expected one of gloo, nccl, hccl"),
        ("npu", "cpu:gloo,npu:nccl", "backend 'nccl' cannot run on 'npu'"),
        ("npu", "cpu:gloo,cuda:nccl", "names no backend for the training device 'npu'"),
        ("cuda", "cpu:gloo,cuda", "expected one of"),
        ("xpu", None, "no default process-group backend"),
    ],
)
def test_dist_backend_rejects(device: str, override: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dv.dist_backend(device, override)


def test_distributed_helpers_without_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (dv.get_rank(), dv.get_world_size(), dv.is_main_process()) == (0, 1, True)
    assert dv.init_distributed(torch.device("cpu")) is False
    dv.cleanup_distributed()  # no group: a no-op
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (dv.get_rank(), dv.get_world_size(), dv.is_main_process()) == (3, 4, False)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InputError, match="RANK='x'"):
        dv.get_rank()


@pytest.mark.parametrize(
    "env",
    [
        {},  # not under torchrun
        {"TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "1"},
        {"TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_USE_AGENT_STORE": "False", "GROUP_WORLD_SIZE": "1"},
        {"TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "2"},
    ],
)
def test_restart_store_only_for_a_restarted_single_node_agent_store(monkeypatch: pytest.MonkeyPatch, env) -> None:
    """First attempts, fresh per-attempt stores and multi-node jobs (counters may differ) keep ``env://``."""
    for key in ("TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_USE_AGENT_STORE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert dv.distributed._restart_store(timedelta(seconds=1)) is None


def test_restart_store_prefixes_the_keys_with_the_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(server.port), "WORLD_SIZE": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = dv.distributed._restart_store(timedelta(seconds=5))
    store.set("0/addr", "new")
    server.set("0/addr", "stale")  # what the failed attempt left behind, unprefixed
    assert store.get("0/addr") == b"new"
    assert server.check(["pipeline/attempt_2/0/addr"])  # check, not get: a missing key would block
    assert server.get("pipeline/attempt_2/0/addr") == b"new"


@pytest.mark.parametrize(
    "env, added",
    [
        ({}, {}),
        ({"RANK": "0", "RANK_ID": "1"}, {}),
        ({"LOCAL_RANK": "0", "RANK_ID": "1"}, {}),
        (
            {"RANK_ID": "3", "RANK_SIZE": "8"},
            {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "8", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
        ),
        (
            {"RANK_ID": "3", "RANK_SIZE": "8", "ASCEND_DEVICE_ID": "5", "MASTER_PORT": "29688"},
            {"RANK": "3", "LOCAL_RANK": "5", "WORLD_SIZE": "8", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29688"},
        ),
        (
            {"RANK_ID": "2", "DEVICE_ID": "6", "ASCEND_DEVICE_ID": "5"},
            {"RANK": "2", "LOCAL_RANK": "6", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
        ),
    ],
)
def test_map_legacy_ascend_env(env: dict[str, str], added: dict[str, str]) -> None:
    environ = dict(env)
    assert dv.map_legacy_ascend_env(environ) == added
    assert environ == {**env, **added}


# ------------------------------------------------------------------------------------------ AMP
@pytest.mark.parametrize(
    "device, requested, expected",
    [
        ("cpu", None, torch.bfloat16),
        ("cuda:0", None, torch.float16),
        ("npu:1", None, torch.float16),
        ("cpu", "fp16", torch.float16),
        ("npu", "BF16", torch.bfloat16),
        ("cuda", torch.bfloat16, torch.bfloat16),
        ("cpu", "float16", torch.float16),
    ],
)
def test_amp_dtype(device: str, requested: torch.dtype | str | None, expected: torch.dtype) -> None:
    assert dv.amp_dtype(device, requested) == expected


@pytest.mark.parametrize("requested", ["fp8", torch.float32, "int8"])
def test_amp_dtype_rejects(requested: torch.dtype | str) -> None:
    with pytest.raises(InputError, match="AMP dtype"):
        dv.amp_dtype("cpu", requested)


OFF = dv.AmpSettings(enabled=False, dtype=torch.float32, keep_norm_fp32=False, loss_scale=None)
AMP_TABLE = [
    # device, amp, opt_level, loss_scale, dtype, expected
    ("cuda", False, "O2", 128, None, OFF),
    ("npu", True, "O0", "dynamic", None, OFF),
    ("cpu", True, "o0", 128, None, OFF),
    ("cuda", True, "O1", "dynamic", None, dv.AmpSettings(True, torch.float16, False, "dynamic")),
    ("cuda", True, "O1", 128, None, dv.AmpSettings(True, torch.float16, False, 128.0)),
    ("npu", True, "O1", "128", None, dv.AmpSettings(True, torch.float16, False, 128.0)),
    ("npu", True, "O2", 128, None, dv.AmpSettings(True, torch.float16, True, 128.0)),
    ("npu", True, "O2", "dynamic", None, dv.AmpSettings(True, torch.float16, True, "dynamic")),
    ("cuda", True, "o2", "Dynamic", None, dv.AmpSettings(True, torch.float16, True, "dynamic")),
    ("cpu", True, "O1", 128, None, dv.AmpSettings(True, torch.bfloat16, False, None)),
    ("cpu", True, "O2", "dynamic", None, dv.AmpSettings(True, torch.bfloat16, True, None)),
    ("cpu", True, "O2", 128, "fp16", dv.AmpSettings(True, torch.float16, True, 128.0)),
    ("npu", True, "O2", 128, "bf16", dv.AmpSettings(True, torch.bfloat16, True, None)),
]


@pytest.mark.parametrize("device, amp, opt_level, loss_scale, dtype, expected", AMP_TABLE)
def test_amp_settings(
    device: str, amp: bool, opt_level: str, loss_scale: float | str, dtype: str | None, expected: dv.AmpSettings
) -> None:
    assert dv.amp_settings(device, amp=amp, opt_level=opt_level, loss_scale=loss_scale, dtype=dtype) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"opt_level": "O3"}, "--opt-level 'O3': expected one of O0, O1, O2"),
        ({"opt_level": "fast"}, "--opt-level"),
        ({"loss_scale": 0}, "--loss-scale 0: expected 'dynamic' or a positive number"),
        ({"loss_scale": "-128"}, "--loss-scale"),
        ({"loss_scale": "static"}, "--loss-scale"),
        ({"loss_scale": float("inf")}, "--loss-scale"),
        ({"dtype": "fp8"}, "AMP dtype"),
    ],
)
def test_amp_settings_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dv.amp_settings("cuda", amp=True, **kwargs)


@pytest.mark.parametrize(
    "device, kwargs",
    [
        ("cpu", {}),  # bf16 by default on CPU: no scaling needed
        ("npu", {"dtype": "bf16"}),
        ("cuda", {"dtype": torch.bfloat16, "loss_scale": 128}),
        ("cpu", {"dtype": "fp16", "enabled": False}),
        ("npu", {"loss_scale": None}),
    ],
)
def test_grad_scaler_none(device: str, kwargs: dict) -> None:
    assert dv.grad_scaler(device, **kwargs) is None


def _tiny_problem() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(8, 4)


def _scaled_step(scaler: torch.amp.GradScaler, overflow: bool) -> bool:
    """One step on a tiny model; returns whether the weights changed."""
    model, optimizer, x = _tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(model(x).pow(2).mean()).backward()
    if overflow:
        model.weight.grad[0, 0] = float("inf")
    scaler.step(optimizer)
    scaler.update()
    return any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("loss_scale", [128, "128", 128.0])
def test_static_grad_scaler_stays_fixed_and_skips_overflow(loss_scale: float | str) -> None:
    scaler = dv.grad_scaler("cpu", dtype="fp16", loss_scale=loss_scale)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert _scaled_step(scaler, overflow=False) is True
    assert scaler.get_scale() == 128.0
    assert _scaled_step(scaler, overflow=True) is False  # the inf step is skipped ...
    assert scaler.get_scale() == 128.0  # ... and the scale is not backed off
    restored = dv.grad_scaler("cpu", dtype="fp16", loss_scale=loss_scale)
    restored.load_state_dict(pickle.loads(pickle.dumps(scaler.state_dict())))
    assert restored.get_scale() == 128.0


def test_dynamic_grad_scaler_backs_off() -> None:
    scaler = dv.grad_scaler("cpu", dtype="fp16", loss_scale="dynamic")
    assert type(scaler) is torch.amp.GradScaler and scaler.is_enabled()
    assert _scaled_step(scaler, overflow=False) is True
    assert scaler.get_scale() == 2.0**16
    assert _scaled_step(scaler, overflow=True) is False
    assert scaler.get_scale() == 2.0**15


def test_grad_scaler_for_npu_without_torch_npu() -> None:
    scaler = dv.grad_scaler("npu:0", dtype="fp16", loss_scale=128)
    assert isinstance(scaler, dv.StaticGradScaler) and scaler.is_enabled()


def test_cpu_autocast_computes_in_bfloat16() -> None:
    linear, conv = nn.Linear(8, 3), nn.Conv3d(1, 2, 3, padding=1)
    x, volume = torch.randn(2, 8), torch.randn(1, 1, 4, 4, 4)
    with dv.autocast(torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert linear(x).dtype == torch.bfloat16
        assert conv(volume).dtype == torch.bfloat16
    assert linear(x).dtype == torch.float32
    with dv.autocast("cpu", enabled=False):
        assert conv(volume).dtype == torch.float32


class _InputDtypes(TorchDispatchMode):
    """Record the dtype of the first tensor argument of every aten op that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is not None:
            self.seen.setdefault(func.overloadpacket.__name__, set()).add(first.dtype)
        return func(*args, **(kwargs or {}))


def _conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.PReLU(), nn.Conv3d(4, 4, 1), nn.GroupNorm(2, 4),
        nn.InstanceNorm3d(4, affine=True), nn.Conv3d(4, 2, 1),
    )  # fmt: skip


@pytest.mark.parametrize("keep_fp32, norm_dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_keep_norm_in_fp32_under_cpu_autocast(keep_fp32: bool, norm_dtype: torch.dtype) -> None:
    net = _conv_bn_net()
    if keep_fp32:
        assert dv.keep_norm_in_fp32(net) is net
    x = torch.randn(2, 1, 4, 4, 4)
    bn_outputs: list[torch.dtype] = []
    net[1].register_forward_hook(lambda module, args, out: bn_outputs.append(out.dtype))
    with dv.autocast("cpu", dtype=torch.bfloat16), _InputDtypes() as record:
        out = net(x)
    assert record.seen["convolution"] == {torch.bfloat16}
    assert record.seen["native_batch_norm"] == {norm_dtype}
    assert record.seen["native_group_norm"] == {norm_dtype}  # GroupNorm and InstanceNorm3d's group norm
    assert bn_outputs == [torch.bfloat16]  # cast back to the input dtype
    assert out.dtype == torch.bfloat16


def test_keep_norm_in_fp32_is_neutral_outside_autocast_and_picklable() -> None:
    reference, patched = _conv_bn_net(), dv.keep_norm_in_fp32(dv.keep_norm_in_fp32(_conv_bn_net()))
    assert list(reference.state_dict()) == list(patched.state_dict())
    assert sum(p.numel() for p in patched.parameters()) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 1, 4, 4, 4)
    reference.eval(), patched.eval()
    assert torch.equal(reference(x), patched(x))  # AMP off: bit-identical
    restored = pickle.loads(pickle.dumps(patched))
    assert torch.equal(restored(x), patched(x))
    with dv.autocast("cpu"), _InputDtypes() as record:
        restored(x)
    assert record.seen["native_batch_norm"] == {torch.float32}  # still patched after unpickling
    assert torch.jit.script(reference)(x).shape == x.shape[:1] + (2,) + x.shape[2:]  # untouched model scripts


def test_layer_norm_kept_fp32() -> None:
    net = dv.keep_norm_in_fp32(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2)))
    with dv.autocast("cpu"), _InputDtypes() as record:
        out = net(torch.randn(3, 8))
    assert record.seen["native_layer_norm"] == {torch.float32}
    assert record.seen["addmm"] == {torch.bfloat16}
    assert out.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------- misc
def test_cpu_describe_synchronize_memory() -> None:
    assert dv.describe("cpu") == f"cpu ({torch.get_num_threads()} threads)"
    assert dv.max_memory_allocated(torch.device("cpu")) is None
    dv.synchronize("cpu")  # no-op, must not raise


# ------------------------------------------------------------------------------------- hardware
@pytest.mark.cuda
def test_cuda_device_amp_and_stats() -> None:
    dev = dv.setup_device("cuda", device_id=0)
    assert dev == torch.device("cuda", 0) and dv.detect_device_type("auto") == "cuda"
    assert dv.describe(dev).startswith("cuda:0 (") and dv.amp_dtype(dev) == torch.float16
    net = dv.keep_norm_in_fp32(_conv_bn_net()).to(dev)
    with dv.autocast(dev), _InputDtypes() as record:
        out = net(torch.randn(2, 1, 4, 4, 4, device=dev))
    assert record.seen["convolution"] == {torch.float16}
    assert {d for op, dtypes in record.seen.items() if "norm" in op for d in dtypes} == {torch.float32}
    assert out.dtype == torch.float16
    scaler = dv.grad_scaler(dev)
    assert type(scaler) is torch.amp.GradScaler and scaler.is_enabled()
    dv.synchronize(dev)
    assert dv.max_memory_allocated(dev) > 0


@pytest.mark.npu
def test_npu_device_amp_and_stats() -> None:
    dev = dv.setup_device("npu", device_id=0)
    assert dev == torch.device("npu", 0) and dv.detect_device_type("auto") == "npu"
    assert dv.describe(dev).startswith("npu:0 (") and dv.dist_backend(dev) == "cpu:gloo,npu:hccl"
    net = dv.keep_norm_in_fp32(_conv_bn_net()).to(dev)
    with dv.autocast(dev):
        out = net(torch.randn(2, 1, 4, 4, 4).to(dev))
    assert out.dtype == torch.float16 and out.device == dev
    assert dv.grad_scaler(dev) is not None
    dv.synchronize(dev)
