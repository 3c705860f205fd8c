"""ConvNet: the standard backbone of the dataset distillation literature (DC, DSA, DM, MTT)."""

from __future__ import annotations

import torch
from torch import nn

from rdd.nets.common import (
    POOLINGS,
    SkippablePool,
    check_choice,
    check_positive_int,
    check_shape,
    make_activation,
    make_norm,
)


class ConvNet(nn.Module):
    """``depth`` blocks of conv3x3 -> norm -> activation -> 2x2 pool, then one linear layer.

    The classifier sees the flattened feature map, so its size depends on ``im_size``; the
    network then only accepts inputs of that size. Pools that would act on a map smaller than
    2x2 are left out.

    Args:
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W).
        width: Channels of every conv layer.
        depth: Number of blocks (>= 1).
        activation: ``relu``, ``sigmoid`` or ``leakyrelu``.
        norm: ``instancenorm``, ``batchnorm``, ``groupnorm``, ``layernorm`` or ``none``.
        pooling: ``avgpool``, ``maxpool`` or ``none``.

    Attributes:
        feature_dim: Size of :meth:`embed`'s output, ``width * H' * W'``.
        features: The conv blocks, (N, C, H, W) -> (N, width, H', W').
        classifier: ``nn.Linear(feature_dim, num_classes)``.
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        activation: str = "relu",
        norm: str = "instancenorm",
        pooling: str = "avgpool",
    ) -> None:
        super().__init__()
        height, wide = check_shape(channel, num_classes, im_size)
        width = check_positive_int("width", width)
        depth = check_positive_int("depth", depth)
        check_choice("pooling", pooling, POOLINGS)
        layers: list[nn.Module] = []
        in_channels = channel
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                make_norm(norm, width),
                make_activation(activation),
            ]
            # Decided here rather than at run time so feature_dim is known without a dummy pass.
            if pooling != "none" and height >= 2 and wide >= 2:
                layers.append(SkippablePool(pooling))
                height, wide = height // 2, wide // 2
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * height * wide
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to flattened features (N, feature_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.classifier(self.embed(x))
