"""A three-layer perceptron on flattened pixels."""

from __future__ import annotations

import torch
from torch import nn

from rdd.nets.common import check_positive_int, check_shape


class MLP(nn.Module):
    """flatten -> Linear(C*H*W, width) -> ReLU -> Linear(width, width) -> ReLU -> Linear(width, K).

    Only accepts inputs of size ``im_size``.

    Args:
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W).
        width: Size of both hidden layers.

    Attributes:
        feature_dim: ``width``, the size of :meth:`embed`'s output (the second hidden layer).
        classifier: ``nn.Linear(width, num_classes)``.
    """

    def __init__(
        self, channel: int, num_classes: int, im_size: tuple[int, int], width: int = 128
    ) -> None:
        super().__init__()
        height, wide = check_shape(channel, num_classes, im_size)
        width = check_positive_int("width", width)
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channel * height * wide, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to hidden features (N, width)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.classifier(self.embed(x))
