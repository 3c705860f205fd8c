"""The small AlexNet variant of the DC/DSA cross-architecture experiments."""

from __future__ import annotations

import torch
from torch import nn

from rdd.nets.common import SkippablePool, check_shape


class AlexNet(nn.Module):
    """Five convs (128, 192, 256, 192, 192 channels) with ReLUs and three max pools, global
    average pool, one linear layer. No normalisation layers.

    The first conv (5x5) uses padding 4 for 1-channel inputs, growing 28x28 MNIST-style images
    to 32x32 as in the DC code, and padding 2 otherwise. Max pools on maps smaller than 2x2 are
    skipped, so any input size works.

    Args:
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W); only validated, the network is size-agnostic.

    Attributes:
        feature_dim: 192, the size of :meth:`embed`'s output.
        classifier: ``nn.Linear(192, num_classes)``.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__()
        check_shape(channel, num_classes, im_size)
        self.features = nn.Sequential(
            nn.Conv2d(channel, 128, 5, padding=4 if channel == 1 else 2),
            nn.ReLU(),
            SkippablePool("maxpool"),
            nn.Conv2d(128, 192, 5, padding=2),
            nn.ReLU(),
            SkippablePool("maxpool"),
            nn.Conv2d(192, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1),
            nn.ReLU(),
            SkippablePool("maxpool"),
            nn.AdaptiveAvgPool2d(1),
        )
        self.feature_dim = 192
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to pooled features (N, 192)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.classifier(self.embed(x))
