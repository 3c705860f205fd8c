"""Building blocks and argument checks shared by the networks in :mod:`rdd.nets`."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("instancenorm", "batchnorm", "groupnorm", "layernorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpool", "maxpool", "none")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported: choose one of {', '.join(choices)}")
    return str(value)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise ValueError.

    Integer-like values (numpy ints, 0-d integer tensors) are accepted; floats and bools are not.
    """
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def check_shape(channel: object, num_classes: object, im_size: object) -> tuple[int, int]:
    """Validate the arguments every network takes and return ``im_size`` as ``(H, W)``.

    Args:
        channel: Number of input channels C.
        num_classes: Number of output logits K.
        im_size: Input height and width; any length-2 sequence (YAML gives lists).

    Returns:
        ``(H, W)`` as a tuple of ints.
    """
    check_positive_int("channel", channel)
    check_positive_int("num_classes", num_classes)
    if isinstance(im_size, (str, bytes)) or not isinstance(im_size, Sequence) or len(im_size) != 2:
        raise ValueError(f"im_size must be (height, width), got {im_size!r}")
    height = check_positive_int("im_size[0]", im_size[0])
    width = check_positive_int("im_size[1]", im_size[1])
    return height, width


def make_norm(norm: str, channels: int) -> nn.Module:
    """Create a normalisation layer for ``(N, channels, H, W)`` feature maps.

    ``instancenorm`` and ``layernorm`` are GroupNorms (one channel per group / one group) as in
    the DC/DSA code: unlike nn.InstanceNorm2d/nn.LayerNorm they have affine parameters and do
    not depend on the spatial size. Note that instance norm of a 1x1 map is constant (its
    ``bias``), so nothing behind it depends on the input.

    Args:
        norm: One of :data:`NORMS`.
        channels: Number of channels of the feature map.

    Returns:
        The layer (``nn.Identity`` for ``"none"``).
    """
    check_choice("norm", norm, NORMS)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "groupnorm":
        if channels % 4:
            raise ValueError(
                f"norm='groupnorm' uses 4 groups and needs a width divisible by 4, got {channels}"
            )
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


def make_activation(activation: str) -> nn.Module:
    """Create the elementwise activation named ``activation`` (one of :data:`ACTIVATIONS`).

    The ReLUs work in place, as the reference ConvNets' do: they follow a conv or a norm,
    whose backward passes need their input, not their output, so the values and gradients
    are the same, and a ConvNet-3 w128 forward on 256 CIFAR images does not allocate and
    first-touch a fresh 128 MB map per block (on a CPU that was 11 % of a DM iteration:
    benchmarks/README.md, "Where the eager time went")."""
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "sigmoid":
        return nn.Sigmoid()
    if activation == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01, inplace=True)
    return nn.ReLU(inplace=True)


class SkippablePool(nn.Module):
    """2x2 stride-2 pooling that passes maps smaller than 2x2 through unchanged.

    Lets one architecture serve every input size: without the skip, deep stacks on small images
    (e.g. VGG11 on 8x8) would pool a 1x1 map down to 0x0.

    Args:
        kind: ``"avgpool"`` or ``"maxpool"``.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        check_choice("pooling", kind, ("avgpool", "maxpool"))
        self.pool = nn.AvgPool2d(2, 2) if kind == "avgpool" else nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` of shape (N, C, H, W) to (N, C, H // 2, W // 2) unless H or W < 2."""
        if x.shape[-2] < 2 or x.shape[-1] < 2:
            return x
        return self.pool(x)
