"""networks.convert.monai_vnet_to_ours: MONAI VNet weights in our VNet give MONAI's outputs."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import VNet as MonaiVNet
from torch import nn

from networks import VNet, monai_vnet_to_ours

MISSING_UP_BIASES = 864  # MONAI's up-path 5^3 convs never have a bias: 2*256 + 2*128 + 64 + 32
UP_BIAS_SHAPES = {
    "up_tr256.ops.0.conv1.bias": 256, "up_tr256.ops.1.conv1.bias": 256, "up_tr128.ops.0.conv1.bias": 128,
    "up_tr128.ops.1.conv1.bias": 128, "up_tr64.ops.0.conv1.bias": 64, "up_tr32.ops.0.conv1.bias": 32,
}
RELATIVE_TOLERANCE = 1e-4


def _randomise(net: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, affine terms, PReLU slopes and biases, so a wrong mapping cannot hide."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            elif isinstance(module, nn.PReLU):
                module.weight.uniform_(0.0, 0.5)
            elif isinstance(module, (nn.Conv3d, nn.Conv2d, nn.ConvTranspose3d, nn.ConvTranspose2d)):
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
    return net


def _relative_max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def monai_reference() -> MonaiVNet:
    torch.manual_seed(0)
    return _randomise(MonaiVNet(spatial_dims=3, in_channels=1, out_channels=2, act="prelu", bias=True)).eval()


@pytest.mark.parametrize("optimized", [True, False])
def test_same_output_as_monai(monai_reference, optimized):
    ours = VNet(optimized=optimized)
    ours.load_state_dict(monai_vnet_to_ours(monai_reference.state_dict()), strict=True)
    ours.eval()
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = monai_reference(x)
        actual = ours(x)
    assert actual.shape == expected.shape == (1, 2, 32, 32, 32)
    assert _relative_max_error(actual, expected) < RELATIVE_TOLERANCE


def test_parameter_difference_is_the_missing_up_biases(monai_reference):
    converted = monai_vnet_to_ours(monai_reference.state_dict())
    n_monai = sum(p.numel() for p in monai_reference.parameters())
    n_ours = sum(p.numel() for p in VNet().parameters())
    assert n_ours - n_monai == MISSING_UP_BIASES
    filled = {k: v for k, v in converted.items() if k not in _renamed_keys(monai_reference)}
    assert {k: v.numel() for k, v in filled.items()} == UP_BIAS_SHAPES
    assert all(torch.count_nonzero(v) == 0 for v in filled.values())


def _renamed_keys(net: nn.Module) -> set[str]:
    return set(monai_vnet_to_ours(net.state_dict(), fill_missing_bias=False))


def test_tensors_are_shared_and_prefix_stripped(monai_reference):
    source = {f"module.{k}": v for k, v in monai_reference.state_dict().items()}  # a DDP checkpoint
    converted = monai_vnet_to_ours(source)
    assert converted["in_tr.conv1.weight"].data_ptr() == monai_reference.in_tr.conv_block.conv.weight.data_ptr()
    assert converted["up_tr32.relu2.weight"] is source["module.up_tr32.act_function2.weight"]
    assert not any(k.startswith("module.") for k in converted)


@pytest.mark.parametrize(
    ("monai_kwargs", "our_kwargs", "shape"),
    [
        ({"spatial_dims": 3, "act": "prelu", "bias": False}, {"bias": False}, (2, 1, 16, 16, 32)),
        ({"spatial_dims": 3, "act": "elu", "bias": True}, {"act": "elu"}, (1, 1, 16, 32, 16)),
        ({"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "act": "prelu", "bias": True},
         {"in_channels": 2, "out_channels": 3}, (1, 2, 16, 16, 16)),
        ({"spatial_dims": 2, "act": "prelu", "bias": True}, {"spatial_dims": 2}, (2, 1, 32, 48)),
    ],
)
def test_other_configurations(monai_kwargs, our_kwargs, shape):
    torch.manual_seed(0)
    monai_kwargs = {"in_channels": 1, "out_channels": 2, **monai_kwargs}
    source = _randomise(MonaiVNet(**monai_kwargs)).eval()
    ours = VNet(**our_kwargs)
    ours.load_state_dict(monai_vnet_to_ours(source.state_dict()), strict=True)
    ours.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert _relative_max_error(ours(x), source(x)) < RELATIVE_TOLERANCE


def test_fill_can_be_forced_off(monai_reference):
    converted = monai_vnet_to_ours(monai_reference.state_dict(), fill_missing_bias=False)
    assert not set(UP_BIAS_SHAPES) & set(converted)
    missing = VNet().load_state_dict(converted, strict=False).missing_keys
    assert sorted(missing) == sorted(UP_BIAS_SHAPES)
