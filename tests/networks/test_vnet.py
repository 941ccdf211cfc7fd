"""networks.VNet: size, compute, layout, shapes, errors, optimised-path equality, export (TorchScript, ONNX, compile)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from networks import VNet
from networks.vnet import _conv_tap_folded, _pointwise_conv
from transforms.errors import InputError

REFERENCE_PARAMS_PRELU = 45_603_934  # mattmacy/vnet.pytorch VNet(elu=False), 1 in, 2 classes
REFERENCE_PARAMS_ELU = 45_600_316
MONAI_PARAMS_NO_BIAS = 45_601_516  # MONAI VNet(out_channels=2, act="prelu", bias=False): same layout as ours
REFERENCE_GFLOP_80_80_64 = 285.8  # forward, batch 1, torch.utils.flop_counter convention (2 x MAC)
FLOP_TOLERANCE = 0.005
FP32_RTOL = 1e-4  # optimised vs plain path: same maths, different summation order


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _meta_vnet(**kwargs) -> VNet:
    with torch.device("meta"):
        return VNet(**kwargs)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = FP32_RTOL) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    assert ((actual - expected).abs().max() / scale).item() < rtol


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, REFERENCE_PARAMS_PRELU),
        ({"act": "elu"}, REFERENCE_PARAMS_ELU),
        ({"act": ("elu", {"inplace": True})}, REFERENCE_PARAMS_ELU),
        ({"bias": False}, MONAI_PARAMS_NO_BIAS),
        ({"optimized": False}, REFERENCE_PARAMS_PRELU),
    ],
)
def test_parameter_count_matches_reference(kwargs, expected):
    assert _n_params(_meta_vnet(**kwargs)) == expected


def test_layout_matches_reference():
    net = _meta_vnet()
    convs5 = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (5, 5, 5)]
    assert len(convs5) == 16  # 1 + (1+2+3+2) + (2+2+1+1) + 1
    assert [len(getattr(net, n).ops) for n in ("down_tr32", "down_tr64", "down_tr128", "down_tr256")] == [1, 2, 3, 2]
    assert [len(getattr(net, n).ops) for n in ("up_tr256", "up_tr128", "up_tr64", "up_tr32")] == [2, 2, 1, 1]
    widths = [getattr(net, n).down_conv.out_channels for n in ("down_tr32", "down_tr64", "down_tr128", "down_tr256")]
    assert [net.in_tr.conv1.out_channels, *widths] == [16, 32, 64, 128, 256]
    assert [getattr(net, n).up_conv.out_channels * 2 for n in ("up_tr256", "up_tr128", "up_tr64", "up_tr32")] == [
        256, 128, 64, 32]
    # dropout: after the down-conv of the two deepest down stages, on the input of the two deepest up stages,
    # on the skip of every up stage
    assert [type(getattr(net, n).do1) for n in ("down_tr32", "down_tr64", "down_tr128", "down_tr256")] == [
        nn.Identity, nn.Identity, nn.Dropout3d, nn.Dropout3d]
    assert [type(getattr(net, n).do1) for n in ("up_tr256", "up_tr128", "up_tr64", "up_tr32")] == [
        nn.Dropout3d, nn.Dropout3d, nn.Identity, nn.Identity]
    assert all(isinstance(getattr(net, n).do2, nn.Dropout3d) for n in ("up_tr256", "up_tr128", "up_tr64", "up_tr32"))
    assert all(isinstance(m, nn.PReLU) and m.num_parameters == m_ch for m, m_ch in (
        (net.in_tr.relu1, 16), (net.down_tr256.relu2, 256), (net.up_tr32.relu2, 32), (net.out_tr.relu1, 2)))
    head = net.out_tr
    assert (head.conv1.kernel_size, head.conv1.out_channels, head.conv2.kernel_size) == ((5, 5, 5), 2, (1, 1, 1))
    assert isinstance(head.bn1, nn.BatchNorm3d)


def test_reference_state_dict_names():
    keys = set(_meta_vnet().state_dict())
    for key in ("in_tr.conv1.weight", "in_tr.bn1.running_mean", "in_tr.relu1.weight", "down_tr32.down_conv.bias",
                "down_tr128.ops.2.conv1.bias", "down_tr64.relu2.weight", "up_tr256.up_conv.weight",
                "up_tr32.ops.0.conv1.bias", "out_tr.conv2.weight", "out_tr.relu1.weight"):
        assert key in keys


@pytest.mark.parametrize("optimized", [True, False])
def test_forward_flops_match_reference(optimized):
    net = _meta_vnet(optimized=optimized)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = net(torch.empty(1, 1, 80, 80, 64, device="meta"))
    assert out.shape == (1, 2, 80, 80, 64)
    assert counter.get_total_flops() / 1e9 == pytest.approx(REFERENCE_GFLOP_80_80_64, rel=FLOP_TOLERANCE)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"init_filters": 4}, (2, 1, 16, 32, 48)),
        ({"init_filters": 2, "in_channels": 2, "out_channels": 3}, (1, 2, 32, 16, 16)),
        ({"init_filters": 8, "act": "elu", "norm": "instance"}, (2, 1, 32, 32, 32)),
        ({"init_filters": 4, "norm": ("group", {"num_groups": 2}), "down_convs": (1, 1, 1, 1)}, (1, 1, 16, 16, 16)),
        ({"spatial_dims": 2, "init_filters": 4}, (2, 1, 64, 32)),
        ({"spatial_dims": 2, "init_filters": 8, "in_channels": 4, "out_channels": 5}, (3, 4, 16, 48)),
    ],
)
def test_output_shape(kwargs, shape):
    net = VNet(**kwargs)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], kwargs.get("out_channels", 2), *shape[2:])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_two_d_uses_channel_dropout():
    net = VNet(spatial_dims=2, init_filters=4)  # default dropout_dim=3 is capped at 2: drop channels, not samples
    assert isinstance(net.up_tr32.do2, nn.Dropout2d) and isinstance(net.in_tr.conv1, nn.Conv2d)


def test_no_dropout_when_prob_zero():
    net = VNet(init_filters=2, dropout_prob=0.0)
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in net.modules())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 97, 160, 160), "spatial size (97, 160, 160) of the input must be divisible by 16 for VNet"),
        ((1, 1, 32, 32, 24), "spatial size (32, 32, 24) of the input must be divisible by 16"),
        ((1, 2, 32, 32, 32), "in_channels=1"),
        ((1, 32, 32, 32), "(N, C, 3 spatial axes)"),
    ],
)
def test_bad_input_shape(shape, message):
    net = _meta_vnet(init_filters=2)
    with pytest.raises(InputError) as err:
        net(torch.empty(shape, device="meta"))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"in_channels": 3}, "in_channels=3 must divide init_filters=16"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
        ({"out_channels": 1.5}, "out_channels must be a positive integer"),
        ({"init_filters": -4}, "init_filters must be a positive integer"),
        ({"dropout_prob": 1.0}, "dropout_prob must be in [0, 1)"),
        ({"dropout_dim": 4}, "dropout_dim must be 1, 2 or 3"),
        ({"down_convs": (1, 2, 3)}, "down_convs must be 4 positive integers"),
        ({"up_convs": (2, 2, 0, 1)}, "up_convs must be 4 positive integers"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError) as err:
        _meta_vnet(**kwargs)
    assert message in str(err.value)


def test_init_is_reference_kaiming_and_deterministic():
    torch.manual_seed(7)
    net = VNet(init_filters=8)
    torch.manual_seed(7)
    again = VNet(init_filters=8)
    torch.manual_seed(8)
    other = VNet(init_filters=8)
    for (key, a), b, c in zip(net.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), key
    assert not torch.equal(net.up_tr32.ops[0].conv1.weight, other.up_tr32.ops[0].conv1.weight)
    conv = net.up_tr32.ops[0].conv1  # 16 -> 16, 5^3: fan-in 2000, std sqrt(2 / 2000)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 125)), rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(net.out_tr.conv2.bias) == 0
    # ConvTranspose escapes the reference's weights_init: PyTorch default, uniform non-zero bias
    assert torch.count_nonzero(net.up_tr32.up_conv.bias) > 0


def test_eval_uses_running_statistics():
    """Unlike the reference's ContBatchNorm3d, eval output of one sample does not depend on the rest of the batch."""
    torch.manual_seed(0)
    net = VNet(init_filters=4)
    x = torch.randn(3, 1, 32, 32, 32)
    net.train()
    net(x)  # move the running stats away from (0, 1)
    net.eval()
    with torch.no_grad():
        _assert_close(net(x[:1]), net(x)[:1], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"init_filters": 4},  # 3-D, 1 input channel, 2-class head: broadcast input, channels-last up_tr32, folded head
        {"init_filters": 4, "in_channels": 2, "out_channels": 3},  # multi-channel input tiling
        {"init_filters": 4, "out_channels": 5},  # wide head: plain conv (channels-last input) even when optimised
        {"init_filters": 4, "act": "elu", "norm": "instance", "bias": False},  # no conv biases, other layers
        {"spatial_dims": 2, "init_filters": 4},
        {"spatial_dims": 2, "init_filters": 8, "in_channels": 4, "act": "elu"},
    ],
)
def test_optimized_path_equals_plain(kwargs):
    torch.manual_seed(0)
    plain = VNet(optimized=False, dropout_prob=0.0, **kwargs)
    fast = VNet(optimized=True, dropout_prob=0.0, **kwargs)
    fast.load_state_dict(plain.state_dict())
    size = (16, 32, 16)[: plain.spatial_dims]  # small, but every level keeps >= 2 values per channel for BN
    x = torch.randn(2, plain.in_channels, *size)
    target = torch.randint(0, kwargs.get("out_channels", 2), (2, *size))
    outs, grads, input_grads = [], [], []
    for net in (plain, fast):  # training mode: batch statistics, gradients through every optimised op
        inp = x.clone().requires_grad_()
        out = net(inp)
        assert out.is_contiguous()  # the channels-last stage does not leak into the logits' layout
        nn.functional.cross_entropy(out, target).backward()
        outs.append(out.detach())
        grads.append({k: p.grad for k, p in net.named_parameters()})
        input_grads.append(inp.grad)
    _assert_close(outs[1], outs[0])
    _assert_close(input_grads[1], input_grads[0], rtol=1e-3)
    # conv biases before a batch norm have mathematically zero gradients (rounding noise): an absolute floor
    floor = FP32_RTOL * max(g.abs().max().item() for g in grads[0].values())
    for key, grad in grads[0].items():
        torch.testing.assert_close(grads[1][key], grad, rtol=1e-3, atol=floor, msg=key)
    for net in (plain, fast):
        net.eval()
    with torch.no_grad():
        _assert_close(fast(x), plain(x))


@pytest.mark.parametrize(("spatial_dims", "out_c", "in_c"), [(3, 2, 8), (3, 1, 3), (2, 3, 4)])
def test_tap_folded_conv_equals_conv(spatial_dims, out_c, in_c):
    torch.manual_seed(0)
    conv = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(in_c, out_c, 5, padding=2)
    x = torch.randn(2, in_c, *(11, 7, 9)[:spatial_dims])
    _assert_close(_conv_tap_folded(x, conv.weight, conv.bias, 2), conv(x), rtol=1e-5)
    _assert_close(_conv_tap_folded(x, conv.weight, None, 2), conv(x) - conv.bias.view(-1, *[1] * spatial_dims), 1e-5)


@pytest.mark.parametrize(
    ("spatial_dims", "out_c", "in_c", "bias"), [(3, 2, 2, True), (3, 3, 5, False), (2, 2, 4, True)]
)
def test_pointwise_conv_equals_conv(spatial_dims, out_c, in_c, bias):
    torch.manual_seed(0)
    conv = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(in_c, out_c, 1, bias=bias)
    x = torch.randn(2, in_c, *(6, 5, 4)[:spatial_dims], requires_grad=True)
    grad = torch.randn(2, out_c, *(6, 5, 4)[:spatial_dims])
    results = []
    for fn in (conv, lambda t: _pointwise_conv(t, conv.weight, conv.bias)):
        conv.zero_grad()
        x.grad = None
        out = fn(x)
        out.backward(grad)
        results.append([out.detach(), x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    for actual, expected in zip(results[1], results[0]):
        _assert_close(actual, expected, rtol=1e-5)
    channels_last = x.detach().contiguous(memory_format=torch.channels_last_3d) if spatial_dims == 3 else x.detach()
    _assert_close(_pointwise_conv(channels_last, conv.weight, conv.bias), results[0][0], rtol=1e-5)


@pytest.mark.parametrize(("spatial_dims", "optimized"), [(3, True), (2, False), (2, True), (3, False)])
def test_channels_last_only_in_last_up_stage(spatial_dims, optimized):
    net = _meta_vnet(spatial_dims=spatial_dims, optimized=optimized)
    flags = [getattr(net, name).channels_last for name in ("up_tr256", "up_tr128", "up_tr64", "up_tr32")]
    assert flags == [False, False, False, optimized and spatial_dims == 3]


@pytest.mark.parametrize(("spatial_dims", "optimized"), [(3, True), (3, False), (2, True)])
def test_torchscript_round_trip(tmp_path, spatial_dims, optimized):
    torch.manual_seed(0)
    net = VNet(spatial_dims=spatial_dims, init_filters=4, in_channels=2, optimized=optimized).eval()
    path = tmp_path / "vnet.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 2, *(32,) * spatial_dims)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(torch.jit.Error, match="must be divisible by 16 for VNet"):
        loaded(torch.randn(1, 2, *(24,) * spatial_dims))


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed")
@pytest.mark.filterwarnings("ignore:Constant folding")  # the exporter's note on the head's strided slices
def test_onnx_export(tmp_path):
    import onnx
    from onnx.reference import ReferenceEvaluator

    torch.manual_seed(0)
    net = VNet(init_filters=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    path = tmp_path / "vnet.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (logits,) = ReferenceEvaluator(model).run(None, {"image": x.numpy()})
    with torch.no_grad():
        _assert_close(torch.from_numpy(logits), net(x))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    net = VNet(init_filters=2, dropout_prob=0.0)
    compiled = torch.compile(net)
    x = torch.randn(2, 1, 16, 16, 16)
    out = compiled(x)
    out.sum().backward()
    _assert_close(out.detach(), net(x).detach())
    assert net.out_tr.conv1.weight.grad is not None
