"""BatchNorm folding for inference: same outputs, no BatchNorm left, the original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from networks import VNet
from networks.fuse import fold_batch_norms


def _with_random_statistics(net: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return net.eval()


@pytest.mark.parametrize("spatial_dims, in_channels, shape", [(3, 1, (2, 1, 32, 32, 16)), (2, 2, (2, 2, 32, 48))])
@pytest.mark.parametrize("optimized", [True, False])
def test_folded_vnet_computes_the_same_function(spatial_dims, in_channels, shape, optimized):
    torch.manual_seed(0)
    net = _with_random_statistics(VNet(spatial_dims=spatial_dims, in_channels=in_channels, init_filters=8,
                                       optimized=optimized))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batch_norms(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()) == 24  # original untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = net(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_instance_norm_and_unknown_layouts_are_left_alone():
    net = VNet(spatial_dims=3, init_filters=4, norm="instance").eval()
    folded = fold_batch_norms(net)
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in folded.modules()) == 24
    plain = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2)).eval()
    assert isinstance(fold_batch_norms(plain)[1], nn.BatchNorm3d)
