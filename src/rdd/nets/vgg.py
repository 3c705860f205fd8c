"""VGG11 with configurable normalisation, as used for cross-architecture evaluation."""

from __future__ import annotations

import torch
from torch import nn

from rdd.nets.common import SkippablePool, check_shape, make_norm

# Conv widths; "M" is a 2x2 max pool.
VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG11: conv3x3 -> norm -> ReLU blocks with max pools, global average pool, one linear layer.

    Max pools on maps smaller than 2x2 are skipped, so any input size >= 1x1 works.

    Args:
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W); only validated, the network is size-agnostic.
        norm: ``instancenorm`` (default), ``batchnorm``, ``groupnorm``, ``layernorm`` or ``none``.

    Attributes:
        feature_dim: 512, the size of :meth:`embed`'s output.
        classifier: ``nn.Linear(512, num_classes)``.
    """

    def __init__(
        self, channel: int, num_classes: int, im_size: tuple[int, int], norm: str = "instancenorm"
    ) -> None:
        super().__init__()
        check_shape(channel, num_classes, im_size)
        layers: list[nn.Module] = []
        in_channels = channel
        for item in VGG11_CFG:
            if item == "M":
                layers.append(SkippablePool("maxpool"))
            else:
                layers += [
                    nn.Conv2d(in_channels, int(item), 3, padding=1),
                    make_norm(norm, int(item)),
                    nn.ReLU(),
                ]
                in_channels = int(item)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.feature_dim = in_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to pooled features (N, 512)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.classifier(self.embed(x))
