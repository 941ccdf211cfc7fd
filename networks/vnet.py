"""V-Net (Milletari et al. 2016) as in the reference PyTorch port, with MONAI layer factories.

One public class, :class:`VNet`. (About 480 lines: the network and its CPU fast paths are one definition, so that
the fast paths are checked against the plain layers they replace in one place.) The private blocks below mirror the
reference's modules and attribute
names (``in_tr``, ``down_tr32`` ... ``out_tr``; ``conv1``, ``bn1``, ``relu1``, ``do1`` ...), so the keys of a
mattmacy/vnet.pytorch (or Ascend) checkpoint match ``VNet()``'s once DataParallel's ``module.`` prefix is removed
(not tested here: no reference checkpoint is available); MONAI ``VNet`` weights go through
:func:`networks.convert.monai_vnet_to_ours`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout, split_args
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from networks.fused import add_act, may_fuse, norm_act
from transforms.errors import InputError

__all__ = ["VNet"]

ActOrNorm = Union[str, tuple]

KERNEL_SIZE = 5  # every "LUConv", the input and the output convolution: 5x5x5 (5x5 in 2-D)
PADDING = KERNEL_SIZE // 2  # "same" padding for the 5-wide kernels
SCALE = 2  # down-convs and up-convs: kernel 2, stride 2 (halve / double every spatial size)
NUM_LEVELS = 4  # four down and four up stages
SIZE_DIVISOR = SCALE**NUM_LEVELS  # 16: spatial sizes must be multiples of this
DEFAULT_INIT_FILTERS = 16  # width of level 0; level L has init_filters * 2**L channels
DEFAULT_DOWN_CONVS = (1, 2, 3, 2)  # 5x5x5 convs in down_tr32, down_tr64, down_tr128, down_tr256
DEFAULT_UP_CONVS = (2, 2, 1, 1)  # 5x5x5 convs in up_tr256, up_tr128, up_tr64, up_tr32
DROPOUT_DOWN_STAGES = (2, 3)  # down stages (0-based) with dropout after the down-conv: down_tr128, down_tr256
DROPOUT_UP_STAGES = (0, 1)  # up stages (0-based) with dropout on their input: up_tr256, up_tr128
DOWN_NAMES = ("down_tr32", "down_tr64", "down_tr128", "down_tr256")  # the reference's names (default width)
UP_NAMES = ("up_tr256", "up_tr128", "up_tr64", "up_tr32")
# Optimised output head: fold the first spatial tap axis of the 5^d output conv into its output channels when the
# head is this narrow. oneDNN computes at least one 16-lane block of output channels, so a 32 -> 2 conv costs as
# much as 32 -> 16; folding makes it 32 -> 2*5 with a (1, 5, 5) kernel plus 5 shifted adds: the same multiply-adds.
FOLD_MAX_OUT_CHANNELS = 3
# Also on CPU (measurements: benchmarks/NOTES.md, "network"):
# - the last up stage (up_tr32: the 32 -> 32 5^3 conv at full resolution) and the head run channels-last (NDHWC):
#   oneDNN then skips the layout reorders around that conv. Only there: channels-last elsewhere did not pay.
# - the head's 1^3 conv (2 -> 2 channels at full resolution) is a batched matmul.


def _act(act: ActOrNorm, channels: int) -> nn.Module:
    """Activation from MONAI's ``Act`` factory; PReLU gets one slope per channel, as in the reference."""
    name, args = split_args(act)
    if str(name).lower() == "prelu" and "num_parameters" not in args:
        args = {**args, "num_parameters": channels}
    return get_act_layer((name, args))


def _norm(norm: ActOrNorm, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation from MONAI's ``Norm`` factory (``"batch"`` = the reference's BatchNorm, see :class:`VNet`)."""
    return get_norm_layer(norm, spatial_dims=spatial_dims, channels=channels)


def _dropout(prob: float | None, dropout_dim: int) -> nn.Module:
    """Dropout from MONAI's ``Dropout`` factory; ``nn.Identity`` when the probability is 0 or None."""
    if not prob:
        return nn.Identity()
    return Dropout[Dropout.DROPOUT, dropout_dim](prob)


def _conv_tap_folded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """``conv{2,3}d(x, weight, bias, padding=padding)`` (stride 1) computed with the first kernel axis folded.

    The (O, C, k, *rest) kernel becomes an (O*k, C, 1, *rest) kernel; its O*k output maps are shifted along the
    first spatial axis and summed. Same multiply-adds as the plain conv, in a different order (fp32 results agree to
    rounding). Worth it only for very narrow outputs (see ``FOLD_MAX_OUT_CHANNELS``).

    Args:
        x: (N, C, S0, *S) input.
        weight: (O, C, k, *k_rest) kernel with odd k and ``padding == k // 2`` on every axis.
        bias: (O,) or None.
        padding: zero padding on every spatial axis.

    Returns:
        (N, O, S0, *S), equal to the plain convolution.
    """
    out_c = weight.shape[0]
    taps = weight.shape[2]
    spatial_dims = weight.dim() - 2
    folded = weight.transpose(1, 2).reshape([out_c * taps, weight.shape[1], 1] + list(weight.shape[3:]))
    rest_pad = [padding] * (spatial_dims - 1)
    if spatial_dims == 3:
        z = F.conv3d(x, folded, None, 1, [0] + rest_pad)
    else:
        z = F.conv2d(x, folded, None, 1, [0] + rest_pad)
    size0 = z.shape[2]
    pad = [0, 0] * (spatial_dims - 1) + [padding, padding]
    z = F.pad(z, pad)  # zero rows on the folded axis; padding inside the conv hits a slow oneDNN path
    # unbind (not select): its backward stacks the tap gradients once instead of zero-filling z once per tap
    maps = z.reshape([z.shape[0], out_c, taps] + list(z.shape[2:])).unbind(2)
    out = maps[0].narrow(2, 0, size0)
    for tap in range(1, taps):
        out = out + maps[tap].narrow(2, tap, size0)
    if bias is not None:
        out = out + bias.view([1, out_c] + [1] * spatial_dims)
    return out


def _pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv{2,3}d(x, weight, bias)`` for a 1^d kernel as a batched matmul (N, O, C) @ (N, C, voxels).

    Args:
        x: (N, C, *S) input.
        weight: (O, C, 1, ...) kernel.
        bias: (O,) or None.

    Returns:
        (N, O, *S), contiguous, equal to the plain convolution.
    """
    n = x.shape[0]
    out_c = weight.shape[0]
    w = weight.reshape(1, out_c, weight.shape[1]).expand(n, out_c, weight.shape[1])
    flat = x.reshape(n, x.shape[1], -1)
    if bias is None:
        y = torch.bmm(w, flat)
    else:
        y = torch.baddbmm(bias.reshape(1, out_c, 1).expand(n, out_c, 1), w, flat)
    return y.reshape([n, out_c] + list(x.shape[2:]))


class _Block(nn.Module):
    """Base of the V-Net stages: the fused CPU training path of ``networks.fused``, hidden from TorchScript."""

    @torch.jit.unused
    def _fusing(self, x: torch.Tensor) -> bool:
        """Whether ``networks.fused`` may run here (CPU training); checked before the conv so that inference keeps
        the plain ``act(norm(conv(x)))`` expression, which frees each conv output as soon as it is normalised."""
        return may_fuse(x)

    @torch.jit.unused
    def _norm_act(self, x: torch.Tensor, norm: nn.Module, act: nn.Module,
                  residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``act(norm(x) [+ residual])``, fused when it pays (``networks.fused.norm_act``)."""
        return norm_act(x, norm, act, residual)

    @torch.jit.unused
    def _add_act(self, a: torch.Tensor, b: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """``act(a + b)``, fused when it pays (``networks.fused.add_act``)."""
        return add_act(a, b, act)


class _LUConv(_Block):
    """conv 5^d (c -> c) -> norm -> act."""

    def __init__(
        self, spatial_dims: int, channels: int, act: ActOrNorm, norm: ActOrNorm, bias: bool, optimized: bool,
    ) -> None:
        super().__init__()
        self.optimized = optimized
        self.conv1 = Conv[Conv.CONV, spatial_dims](channels, channels, KERNEL_SIZE, padding=PADDING, bias=bias)
        self.bn1 = _norm(norm, spatial_dims, channels)
        self.relu1 = _act(act, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript skips this block (and the unused methods it calls)
            if self.optimized and self._fusing(x):
                return self._norm_act(self.conv1(x), self.bn1, self.relu1)
        return self.relu1(self.bn1(self.conv1(x)))


def _n_conv(
    spatial_dims: int, channels: int, depth: int, act: ActOrNorm, norm: ActOrNorm, bias: bool, optimized: bool,
) -> nn.Sequential:
    return nn.Sequential(*[_LUConv(spatial_dims, channels, act, norm, bias, optimized) for _ in range(depth)])


class _InputTransition(_Block):
    """conv 5^d (in -> f) -> norm, plus the input tiled f/in times along channels, -> act. (N, in, *S) -> (N, f, *S)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, act: ActOrNorm, norm: ActOrNorm, bias: bool,
        optimized: bool,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.repeats = out_channels // in_channels
        self.optimized = optimized
        self.conv1 = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, KERNEL_SIZE, padding=PADDING, bias=bias)
        self.bn1 = _norm(norm, spatial_dims, channels=out_channels)
        self.relu1 = _act(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.optimized:  # the reference / MONAI way: materialise the repeated input
            repeats = [1, self.repeats] + [1] * (x.dim() - 2)
            return self.relu1(self.bn1(self.conv1(x)) + x.repeat(repeats))
        # Broadcast instead of copying: channel j of the tiled input is input channel j % in_channels.
        if self.in_channels == 1:
            if not torch.jit.is_scripting():
                if self._fusing(x):
                    return self._norm_act(self.conv1(x), self.bn1, self.relu1, x)
            return self.relu1(self.bn1(self.conv1(x)) + x)
        out = self.bn1(self.conv1(x))
        shape = out.shape
        tiled = out.reshape([shape[0], self.repeats, self.in_channels] + list(shape[2:])) + x.unsqueeze(1)
        return self.relu1(tiled.reshape(shape))


class _DownTransition(_Block):
    """down = act(norm(conv 2^d stride 2 (c -> 2c))); out = act2(nConv(dropout(down)) + down). Halves every size."""

    def __init__(
        self, spatial_dims: int, in_channels: int, n_convs: int, act: ActOrNorm, norm: ActOrNorm, bias: bool,
        dropout_prob: float | None, dropout_dim: int, optimized: bool,
    ) -> None:
        super().__init__()
        out_channels = 2 * in_channels
        self.down_conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, SCALE, stride=SCALE, bias=bias)
        self.bn1 = _norm(norm, spatial_dims, out_channels)
        self.relu1 = _act(act, out_channels)
        self.do1 = _dropout(dropout_prob, dropout_dim)
        self.ops = _n_conv(spatial_dims, out_channels, n_convs, act, norm, bias, optimized)
        self.relu2 = _act(act, out_channels)
        self.optimized = optimized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if self.optimized and self._fusing(x):
                down = self._norm_act(self.down_conv(x), self.bn1, self.relu1)
                return self._add_act(self.ops(self.do1(down)), down, self.relu2)
        down = self.relu1(self.bn1(self.down_conv(x)))
        out = self.ops(self.do1(down))
        return self.relu2(out + down)


class _UpTransition(_Block):
    """up = act(norm(convT 2^d stride 2 (cin -> cout/2))); cat = [up, dropout(skip)]; out = act2(nConv(cat) + cat)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, n_convs: int, act: ActOrNorm, norm: ActOrNorm,
        bias: bool, input_dropout: float | None, skip_dropout: float | None, dropout_dim: int, optimized: bool,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        half = out_channels // 2
        self.channels_last = channels_last
        # ConvTranspose keeps its bias for any ``bias`` (as MONAI does).
        self.up_conv = Conv[Conv.CONVTRANS, spatial_dims](in_channels, half, SCALE, stride=SCALE)
        self.bn1 = _norm(norm, spatial_dims, half)
        self.relu1 = _act(act, half)
        self.do1 = _dropout(input_dropout, dropout_dim)
        self.do2 = _dropout(skip_dropout, dropout_dim)
        self.ops = _n_conv(spatial_dims, out_channels, n_convs, act, norm, bias, optimized)
        self.relu2 = _act(act, out_channels)
        self.optimized = optimized

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # channels-last (measured on CPU only, see FOLD_MAX_OUT_CHANNELS); not when tracing: ONNX has no NDHWC
        if self.channels_last and x.is_cpu and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last_3d)
            skip = skip.contiguous(memory_format=torch.channels_last_3d)
        if not torch.jit.is_scripting():
            if self.optimized and self._fusing(x):
                up = self._norm_act(self.up_conv(self.do1(x)), self.bn1, self.relu1)
                cat = torch.cat((up, self.do2(skip)), 1)
                return self._add_act(self.ops(cat), cat, self.relu2)
        up = self.relu1(self.bn1(self.up_conv(self.do1(x))))
        cat = torch.cat((up, self.do2(skip)), 1)
        return self.relu2(self.ops(cat) + cat)


class _OutputTransition(_Block):
    """conv 5^d (c -> out) -> norm -> act -> conv 1^d (out -> out): raw logits, no softmax."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, act: ActOrNorm, norm: ActOrNorm, bias: bool,
        optimized: bool,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv1 = conv(in_channels, out_channels, KERNEL_SIZE, padding=PADDING, bias=bias)
        self.bn1 = _norm(norm, spatial_dims, out_channels)
        self.relu1 = _act(act, out_channels)
        self.conv2 = conv(out_channels, out_channels, 1)
        self.fold = optimized and out_channels <= FOLD_MAX_OUT_CHANNELS
        self.padding = PADDING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold and x.is_cpu:  # measured on CPU only; elsewhere the plain conv
            # contiguous: BatchNorm on a 2-channel channels-last tensor is ~15x slower than on NCDHW
            out = _conv_tap_folded(x, self.conv1.weight, self.conv1.bias, self.padding).contiguous()
            if not torch.jit.is_scripting():
                if self._fusing(out):
                    return _pointwise_conv(self._norm_act(out, self.bn1, self.relu1), self.conv2.weight,
                                           self.conv2.bias)
            out = self.relu1(self.bn1(out))
            return _pointwise_conv(out, self.conv2.weight, self.conv2.bias)
        return self.conv2(self.relu1(self.bn1(self.conv1(x)))).contiguous()  # NCDHW logits after channels-last


class VNet(nn.Module):
    """V-Net for 2-D/3-D segmentation, faithful to mattmacy/vnet.pytorch (the reference) with MONAI layer factories.

    Milletari, Navab, Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
    Segmentation", 3DV 2016 (https://arxiv.org/abs/1606.04797); reference code https://github.com/mattmacy/vnet.pytorch
    (a00c8ea); MONAI's ``monai.networks.nets.VNet`` has the same layout.

    With the defaults it is the reference network: widths 16-32-64-128-256, 5^3 convs per stage 1 (input) /
    1, 2, 3, 2 (down) / 2, 2, 1, 1 (up), residual adds, dropout after the down-conv of the two deepest down stages,
    on the input of the two deepest up stages and on the skip of every up stage, the head conv 5^3 -> norm -> act ->
    conv 1^3, PReLU with one slope per channel, a bias on every conv: 45,603,934 parameters (45,600,316 with ELU),
    285.8 GFLOP forward for a (1, 1, 80, 80, 64) input. Conv weights are Kaiming-normal (fan-in, gain sqrt(2)) with
    zero bias, as the reference's ``weights_init``; transposed convs keep PyTorch's default init because that
    function's ``"Conv3d"`` name test misses ``ConvTranspose3d``.

    Differences from the reference, on purpose:
        - The input is tiled along channels (the reference's ``torch.cat`` on dim 0 tiles the batch: docs/reference.md).
        - Normalisation is a standard layer: in ``eval()`` BatchNorm uses its running statistics. The reference's
          ContBatchNorm3d always normalises with the current batch, so its test outputs depend on the test batch.
        - Output is raw logits (N, out_channels, *S), channel-first; softmax / log_softmax belong to the loss and
          the post-processing (the reference returns channels-last log-probabilities).
        - ``dropout_prob`` sets every dropout, including the skip dropout that the reference fixes at 0.5.

    ``optimized=True`` (default) computes the same function faster on CPU: the input is added by broadcasting
    instead of a repeated copy, a narrow output head (out_channels <= 3) uses a tap-folded 5^d convolution and a
    batched matmul for its 1^d convolution, in 3-D the last up stage and the head run channels-last, and in CPU
    training every BatchNorm -> PReLU and residual add -> PReLU runs as one ``torch.compile``-generated kernel
    forward and backward (``networks.fused``: compiled once per process; ``VNET_NO_FUSED=1`` turns it off). Same
    multiply-adds, different summation order, so fp32 outputs equal the plain path to rounding; the logits are
    contiguous either way. Parameters and state dict are the same either way; ``optimized=False`` is the
    plain, MONAI-like computation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels; must divide ``init_filters``.
        out_channels: output channels (classes), logits.
        act: activation name or ``(name, kwargs)`` for MONAI's ``Act`` factory, e.g. ``"prelu"``, ``"elu"``,
            ``("elu", {"inplace": True})``. PReLU gets one slope per channel (initial 0.25).
        norm: normalisation name or ``(name, kwargs)`` for MONAI's ``Norm`` factory, e.g. ``"batch"``,
            ``"instance"``, ``("group", {"num_groups": 4})``.
        dropout_prob: probability of every dropout layer; 0 or None disables them.
        dropout_dim: 1, 2 or 3 for MONAI's ``Dropout`` factory (3 = Dropout3d, whole channels). Capped at
            ``spatial_dims`` so that 2-D inputs still drop channels, not whole samples.
        bias: add a bias to the 5^d convs and the down-convs (the transposed convs and the final 1^d conv always
            have one, as in MONAI).
        init_filters: width of level 0 (16 in the reference); level L has ``init_filters * 2**L`` channels.
        down_convs: number of 5^d convs in each of the four down stages.
        up_convs: number of 5^d convs in each of the four up stages, deepest first.
        optimized: use the faster equivalent computations described above.

    Raises:
        InputError: a bad argument; in ``forward``, an input whose rank, channels or spatial size (not a multiple of
            16) does not fit.

    Example::

        net = VNet()  # the reference network
        logits = net(torch.zeros(2, 1, 80, 80, 64))  # (2, 2, 80, 80, 64)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        act: ActOrNorm = "prelu",
        norm: ActOrNorm = "batch",
        dropout_prob: float | None = 0.5,
        dropout_dim: int = 3,
        bias: bool = True,
        init_filters: int = DEFAULT_INIT_FILTERS,
        down_convs: Sequence[int] = DEFAULT_DOWN_CONVS,
        up_convs: Sequence[int] = DEFAULT_UP_CONVS,
        optimized: bool = True,
    ) -> None:
        super().__init__()
        _check_args(spatial_dims, in_channels, out_channels, dropout_prob, dropout_dim, init_filters, down_convs,
                    up_convs)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.size_divisor = SIZE_DIVISOR
        drop_dim = min(dropout_dim, spatial_dims)
        f = init_filters
        self.in_tr = _InputTransition(spatial_dims, in_channels, f, act, norm, bias, optimized)
        for level, (name, n_convs) in enumerate(zip(DOWN_NAMES, down_convs)):
            prob = dropout_prob if level in DROPOUT_DOWN_STAGES else None
            self.add_module(name, _DownTransition(spatial_dims, f * 2**level, n_convs, act, norm, bias, prob, drop_dim,
                                                  optimized))
        for i, (name, n_convs) in enumerate(zip(UP_NAMES, up_convs)):
            cin = f * 2 ** (NUM_LEVELS - max(i - 1, 0))  # 16f, 16f, 8f, 4f: the deepest stage feeds the first
            cout = f * 2 ** (NUM_LEVELS - i)  # 16f, 8f, 4f, 2f
            prob = dropout_prob if i in DROPOUT_UP_STAGES else None
            channels_last = optimized and spatial_dims == 3 and i == NUM_LEVELS - 1
            up = _UpTransition(spatial_dims, cin, cout, n_convs, act, norm, bias, prob, dropout_prob, drop_dim,
                               optimized, channels_last)
            self.add_module(name, up)
        self.out_tr = _OutputTransition(spatial_dims, 2 * f, out_channels, act, norm, bias, optimized)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch.

        Args:
            x: (N, in_channels, *S) with every spatial size a multiple of 16.

        Returns:
            (N, out_channels, *S) raw logits.
        """
        if torch.jit.is_scripting():
            _check_input_scripted(x, self.spatial_dims, self.in_channels, self.size_divisor)
        elif not torch.jit.is_tracing():  # a traced graph (ONNX export) would only bake the check in as warnings
            self._check_input(x)
        out16 = self.in_tr(x)
        out32 = self.down_tr32(out16)
        out64 = self.down_tr64(out32)
        out128 = self.down_tr128(out64)
        out256 = self.down_tr256(out128)
        x = self.up_tr256(out256, out128)
        x = self.up_tr128(x, out64)
        x = self.up_tr64(x, out32)
        x = self.up_tr32(x, out16)
        return self.out_tr(x)

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        """Eager-mode input check (raises InputError); the scripted model uses ``_check_input_scripted``."""
        if x.dim() != self.spatial_dims + 2:
            raise InputError(
                f"input of VNet must be (N, C, {self.spatial_dims} spatial axes), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(f"input of VNet must have in_channels={self.in_channels} channels, got {x.shape[1]}")
        size = tuple(int(s) for s in x.shape[2:])
        if any(s % SIZE_DIVISOR for s in size):
            raise InputError(f"spatial size {size} of the input must be divisible by {SIZE_DIVISOR} for VNet")


def _check_input_scripted(x: torch.Tensor, spatial_dims: int, in_channels: int, size_divisor: int) -> None:
    """TorchScript version of ``VNet._check_input`` (TorchScript cannot raise InputError; it raises ValueError)."""
    if x.dim() != spatial_dims + 2:
        raise ValueError("input of VNet must be (N, C, " + str(spatial_dims) + " spatial axes), got " + str(x.shape))
    if x.shape[1] != in_channels:
        raise ValueError("input of VNet must have in_channels=" + str(in_channels) + " channels, got " + str(x.shape))
    for s in x.shape[2:]:
        if s % size_divisor != 0:
            raise ValueError(
                "spatial size " + str(x.shape[2:]) + " of the input must be divisible by " + str(size_divisor)
                + " for VNet"
            )


def _check_args(
    spatial_dims: int, in_channels: int, out_channels: int, dropout_prob: float | None, dropout_dim: int,
    init_filters: int, down_convs: Sequence[int], up_convs: Sequence[int],
) -> None:
    """Raise InputError naming the first bad constructor argument."""
    if spatial_dims not in (2, 3):
        raise InputError(f"VNet spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("init_filters", init_filters)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"VNet {name} must be a positive integer, got {value!r}")
    if init_filters % in_channels:
        raise InputError(f"VNet in_channels={in_channels} must divide init_filters={init_filters}")
    if dropout_prob is not None and not 0.0 <= dropout_prob < 1.0:
        raise InputError(f"VNet dropout_prob must be in [0, 1) or None, got {dropout_prob!r}")
    if dropout_dim not in (1, 2, 3):
        raise InputError(f"VNet dropout_dim must be 1, 2 or 3, got {dropout_dim!r}")
    for name, convs in (("down_convs", down_convs), ("up_convs", up_convs)):
        ok = isinstance(convs, Sequence) and len(convs) == NUM_LEVELS
        if not ok or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in convs):
            raise InputError(f"VNet {name} must be {NUM_LEVELS} positive integers, got {convs!r}")


def _init_weights(module: nn.Module) -> None:
    """The reference's ``weights_init``: Kaiming-normal (fan-in, gain sqrt(2)) conv weights, zero bias.

    Only plain convolutions: the reference matches class names containing "Conv3d", which ``ConvTranspose3d`` does
    not, so transposed convs keep PyTorch's default (Kaiming-uniform, a = sqrt(5)) init.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
