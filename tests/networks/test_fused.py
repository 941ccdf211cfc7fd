"""networks.fused: the fused BatchNorm / add + PReLU training path equals the plain modules, taken only where meant."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from networks import VNet, fused


@pytest.fixture
def fuse_small(monkeypatch):
    """Fuse every size (the real threshold keeps tiny test tensors on the plain path), with the compiler taken as
    working (a failure then fails the test instead of falling back); returns the names of the compiled kernels that
    ran and returned, in order."""
    monkeypatch.setattr(fused, "MIN_NUMEL", 0)
    monkeypatch.delenv(fused.ENV_DISABLE, raising=False)
    monkeypatch.setitem(fused._state, "usable", True)
    calls = []
    real_kernel = fused._kernel

    def spy(name):
        kernel = real_kernel(name)

        def call(*args):
            out = kernel(*args)
            calls.append(name)
            return out

        return call

    monkeypatch.setattr(fused, "_kernel", spy)
    return calls


def _norms(calls):
    return sum(name in ("norm", "norm_add") for name in calls)


def _pair(channels=3, momentum=0.1, affine=True, track=True):
    torch.manual_seed(0)
    norm = nn.BatchNorm3d(channels, momentum=momentum, affine=affine, track_running_stats=track)
    act = nn.PReLU(channels)
    with torch.no_grad():
        if affine:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        act.weight.uniform_(0.1, 0.4)
    return norm, act


def _grads(x, outputs, *modules):
    grad_out = torch.randn_like(outputs)
    params = [x] + [p for m in modules for p in m.parameters()]
    return torch.autograd.grad(outputs, params, grad_out)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_norm_act_equals_the_modules(fuse_small, residual, training, affine):
    x = (torch.randn(2, 3, 4, 6, 5) * 2 + 1).requires_grad_()
    res = torch.randn(2, 1, 4, 6, 5) if residual else None  # broadcast over channels, as the V-Net input stage
    plain_norm, plain_act = _pair(affine=affine)
    fast_norm, fast_act = _pair(affine=affine)
    for m in (plain_norm, fast_norm):
        m.train(training)
    torch.manual_seed(1)
    y_plain = plain_act(plain_norm(x) + (res if residual else 0))
    torch.manual_seed(1)
    y_fast = fused.norm_act(x, fast_norm, fast_act, res)
    assert fuse_small == (["norm_add"] if residual else ["norm"])
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    torch.manual_seed(2)
    g_plain = _grads(x, y_plain, plain_norm, plain_act)
    torch.manual_seed(2)
    g_fast = _grads(x, y_fast, fast_norm, fast_act)
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(fast_norm.buffers(), plain_norm.buffers()):  # running mean / var, num_batches_tracked
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(fast_norm.num_batches_tracked) == (1 if training else 0)


def test_add_act_equals_the_module(fuse_small):
    a = torch.randn(2, 4, 3, 5, 6, requires_grad=True)
    b = torch.randn(2, 4, 3, 5, 6, requires_grad=True)
    _, act = _pair(4)
    y_plain = act(a + b)
    y_fast = fused.add_act(a, b, act)
    assert fuse_small == ["add"]
    torch.testing.assert_close(y_fast, y_plain)
    g = torch.randn_like(y_plain)
    fast_grads = torch.autograd.grad(y_fast, [a, b, act.weight], g)
    for p, q in zip(fast_grads, torch.autograd.grad(y_plain, [a, b, act.weight], g)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_stays_within_bf16_rounding(fuse_small):
    x = torch.randn(2, 3, 4, 6, 5).to(torch.bfloat16).requires_grad_()
    plain_norm, plain_act = _pair()
    fast_norm, fast_act = _pair()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain = plain_act(plain_norm(x))
        y_fast = fused.norm_act(x, fast_norm, fast_act)
    assert fuse_small == ["norm"]
    assert y_fast.dtype == y_plain.dtype == torch.bfloat16
    torch.testing.assert_close(y_fast.float(), y_plain.float(), rtol=2e-2, atol=2e-2)
    g = torch.randn_like(y_plain)
    for a, b in zip(torch.autograd.grad(y_fast, [x, fast_norm.weight, fast_act.weight], g),
                    torch.autograd.grad(y_plain, [x, plain_norm.weight, plain_act.weight], g)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=3e-2 * float(b.abs().max()))
    torch.testing.assert_close(fast_norm.running_mean, plain_norm.running_mean, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(fast_norm.running_var, plain_norm.running_var, rtol=1e-2, atol=1e-3)


def test_plain_path_where_fusing_does_not_apply(fuse_small, monkeypatch):
    x = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    norm, act = _pair()
    with torch.no_grad():  # inference
        fused.norm_act(x, norm, act)
    fused.norm_act(x.detach(), norm, act)  # nothing to differentiate
    fused.norm_act(x, nn.InstanceNorm3d(3, affine=True), act)  # other norms
    fused.norm_act(x, nn.BatchNorm3d(3, momentum=None), act)  # cumulative average
    fused.norm_act(x, norm, nn.ELU())  # other activations
    fused.add_act(x, x, nn.ReLU())
    monkeypatch.setenv(fused.ENV_DISABLE, "1")
    fused.norm_act(x, norm, act)
    monkeypatch.delenv(fused.ENV_DISABLE)
    hooked = nn.BatchNorm3d(3)
    hooked.register_forward_hook(lambda *_: fuse_small.append("hook"))
    fused.norm_act(x, hooked, act)  # hooks must fire: plain module call
    patched = nn.BatchNorm3d(3)
    patched.forward = lambda t: t  # an instance forward that is not the class's maths
    assert torch.equal(fused.norm_act(x, patched, nn.PReLU(3, init=1.0)), x)
    monkeypatch.setattr(fused, "MIN_NUMEL", x.numel() + 1)  # small tensors
    fused.norm_act(x, norm, act)
    assert fuse_small == ["hook"]
    monkeypatch.setattr(fused, "MIN_NUMEL", 0)
    fused.norm_act(x, norm, act)  # positive control: the same call fuses once nothing stands in the way
    assert fuse_small == ["hook", "norm"]


def test_amp_o2_norms_still_fuse(fuse_small):
    """pipeline.device.keep_norm_in_fp32 (AMP O2) patches the norms' forward; the kernel normalises in fp32 too."""
    from pipeline.device import keep_norm_in_fp32

    x = torch.randn(2, 3, 4, 6, 5).to(torch.bfloat16).requires_grad_()
    (plain_norm, plain_act), (fast_norm, fast_act) = _pair(), _pair()
    keep_norm_in_fp32(plain_norm), keep_norm_in_fp32(fast_norm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain = plain_act(plain_norm(x))
        y_fast = fused.norm_act(x, fast_norm, fast_act)
    assert fuse_small == ["norm"] and y_fast.dtype == y_plain.dtype
    torch.testing.assert_close(y_fast.float(), y_plain.float(), rtol=2e-2, atol=2e-2)


def test_wrong_rank_gets_the_modules_error(fuse_small):
    norm, act = _pair()
    with pytest.raises(ValueError, match="expected 5D input"):
        fused.norm_act(torch.randn(2, 3, 4, 4, requires_grad=True), norm, act)


def test_a_compile_failure_after_the_probe_falls_back_too(fuse_small, monkeypatch, caplog):
    def broken_kernel(name):
        def call(*args):
            raise RuntimeError("InductorError: InvalidCxxCompiler: gone\nmore")

        return call

    monkeypatch.setattr(fused, "_kernel", broken_kernel)
    x = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    (plain_norm, plain_act), (norm, act) = _pair(), _pair()
    with caplog.at_level(logging.WARNING, logger="networks.fused"):
        y = fused.norm_act(x, norm, act)
        fused.add_act(x, x, act)
    torch.testing.assert_close(y, plain_act(plain_norm(x)))
    assert [r.getMessage().count("InvalidCxxCompiler: gone") for r in caplog.records] == [1]
    assert fused._state["usable"] is False and int(norm.num_batches_tracked) == 1


def test_many_variants_stay_compiled(fuse_small):
    """fp32 / bf16 x NCDHW / channels-last x batch 2 / 1, and 2-D: more variants than Dynamo's default limit of 8."""
    norm, act = _pair()
    norm2d = nn.BatchNorm2d(3)
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    torch_logger = logging.getLogger("torch._dynamo.convert_frame")  # where Dynamo warns; torch's loggers do not
    # propagate to the root logger, so pytest's caplog would not see it
    torch_logger.addHandler(handler)
    try:
        for amp in (False, True):
            for layout in (torch.contiguous_format, torch.channels_last_3d):
                for batch in (2, 1):
                    x = torch.randn(batch, 3, 4, 4, 4).contiguous(memory_format=layout).requires_grad_()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                        fused.norm_act(x, norm, act).sum().backward()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                fused.norm_act(torch.randn(2, 3, 4, 4, requires_grad=True), norm2d, act).sum().backward()
    finally:
        torch_logger.removeHandler(handler)
    assert fuse_small == ["norm"] * 10
    assert not [m for m in messages if "recompile_limit" in m]


def test_a_broken_compiler_falls_back_once_with_a_warning(fuse_small, monkeypatch, caplog):
    def broken_probe():
        raise RuntimeError("InductorError: CppCompileError: no C++ compiler\nmore lines")

    monkeypatch.setattr(fused, "_probe", broken_probe)
    monkeypatch.setitem(fused._state, "usable", None)
    x = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    plain_norm, plain_act = _pair()
    norm, act = _pair()
    with caplog.at_level(logging.WARNING, logger="networks.fused"):
        y = fused.norm_act(x, norm, act)
        fused.norm_act(x, norm, act)
    torch.testing.assert_close(y, plain_act(plain_norm(x)))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0] and "more lines" not in warnings[0]
    assert fused._state["usable"] is False and not fused.may_fuse(x)
    assert int(norm.num_batches_tracked) == 2  # counted once per call, as the plain module does


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_vnet_training_step_equals_the_plain_network(fuse_small, spatial_dims):
    """Whole network, fused stages (every block, channels-last last up stage in 3-D) against ``optimized=False``."""
    torch.manual_seed(0)
    kwargs = dict(spatial_dims=spatial_dims, init_filters=4, dropout_prob=0.0)
    fast, plain = VNet(**kwargs), VNet(optimized=False, **kwargs)
    plain.load_state_dict(fast.state_dict())
    size = (32,) * spatial_dims
    x = torch.randn(2, 1, *size)
    y = torch.randint(0, 2, (2, *size))
    for net in (fast, plain):
        net.train()
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert _norms(fuse_small) == 24 and fuse_small.count("add") == 8  # every norm-act and add-act
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        if name.endswith(("conv1.bias", "down_conv.bias", "up_conv.bias")):
            continue  # a bias right before BatchNorm has a zero gradient in exact arithmetic: only rounding is left
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3 * float(q.grad.abs().max()), msg=name)
    for (name, a), b in zip(fast.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    fast.eval(), plain.eval()
    with torch.no_grad():
        calls = len(fuse_small)
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
        assert len(fuse_small) == calls  # inference never takes the fused path


def test_monai_metatensor_inputs(fuse_small):
    """MONAI's trainers feed MetaTensors; the compiled kernels get plain tensors and the gradients still flow."""
    from monai.data import MetaTensor

    torch.manual_seed(0)
    fast, plain = VNet(init_filters=4, dropout_prob=0.0), VNet(init_filters=4, dropout_prob=0.0, optimized=False)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 1, 32, 32, 32)
    losses = []
    for net, inp in ((fast, MetaTensor(x.clone())), (plain, x)):
        loss = net(inp).float().square().mean()
        loss.backward()
        losses.append(float(loss.detach()))
    assert _norms(fuse_small) == 24
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(fast.in_tr.conv1.weight.grad, plain.in_tr.conv1.weight.grad, rtol=1e-3, atol=1e-4)


def test_first_use_leaves_the_global_rng_alone(fuse_small, monkeypatch):
    """The compiler probe runs inside the first training step: drawing random numbers there would shift the dropout
    masks of that run and break bitwise reproducibility and resume."""
    monkeypatch.setitem(fused._state, "usable", None)
    norm, act = _pair()
    x = torch.linspace(-2, 2, 2 * 3 * 64).reshape(2, 3, 4, 4, 4).requires_grad_()
    before = torch.get_rng_state()
    fused.norm_act(x, norm, act).sum().backward()
    assert fused._state["usable"] is True
    assert torch.equal(torch.get_rng_state(), before)


def test_fused_training_is_bitwise_reproducible(fuse_small, monkeypatch):
    def train():
        monkeypatch.setitem(fused._state, "usable", None)  # each run starts as a fresh process would
        torch.manual_seed(0)
        net = VNet(init_filters=4)  # with dropout
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        x, y = torch.randn(2, 1, 32, 32, 32), torch.randint(0, 2, (2, 32, 32, 32))
        for _ in range(2):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return net.state_dict()

    first, second = train(), train()
    assert fused._state["usable"] is True and _norms(fuse_small) >= 2 * 2 * 24  # the runs were fused
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(("raw", "expected"),
                         [("", 1 << 20), ("0", 0), ("4096", 4096), ("-1", 1 << 20), ("x", 1 << 20)])
def test_min_numel_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(fused.ENV_MIN_NUMEL, raw)
    assert fused._min_numel() == expected


@pytest.mark.slow
def test_no_cxx_compiler_trains_with_the_plain_modules(tmp_path):
    """A real broken toolchain (no C++ compiler for Inductor): one warning line, the step still runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import torch\nfrom networks import VNet, fused\nfused.MIN_NUMEL = 0\ntorch.manual_seed(0)\n"
            "VNet(init_filters=4)(torch.randn(1, 1, 32, 32, 32)).sum().backward()\n"
            "print('usable', fused._state['usable'])\n")
    env = dict(os.environ, CXX=str(tmp_path / "no-such-g++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]), PYTHONWARNINGS="ignore")
    env.pop(fused.ENV_DISABLE, None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usable False" in proc.stdout
    warnings = [ln for ln in proc.stderr.splitlines() if "fused BatchNorm+PReLU disabled" in ln]
    assert len(warnings) == 1 and "C++ compiler" in warnings[0]
