"""CIFAR-style ResNets: ResNet18 (strided convs) and IDC's ResNetAP10 (avg-pool downsampling)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rdd.nets.common import SkippablePool, check_choice, check_positive_int, check_shape, make_norm

DOWNSAMPLES = ("stride", "avgpool")
WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; may halve the resolution and change width.

    Args:
        in_channels: Channels of the input map.
        out_channels: Channels of the output map.
        downsample: Whether to halve H and W.
        mode: ``"stride"`` (stride-2 convs) or ``"avgpool"`` (2x2 average pooling after the
            first conv and in the shortcut, as in IDC's ResNetAP). Average pooling is skipped on
            maps smaller than 2x2; a stride-2 conv keeps a 1x1 map 1x1 anyway.
        norm: Normalisation name, see :func:`rdd.nets.common.make_norm`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, downsample: bool, mode: str, norm: str
    ) -> None:
        super().__init__()
        stride = 2 if downsample and mode == "stride" else 1
        pool_here = downsample and mode == "avgpool"
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.pool = SkippablePool("avgpool") if pool_here else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                SkippablePool("avgpool") if pool_here else nn.Identity(),
                make_norm(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) to (N, out_channels, H', W'), H' ~ H / 2 if downsampling."""
        out = self.pool(self.relu(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, four stages of :class:`BasicBlock` (64/128/256/512 channels), global average
    pool, linear classifier. Accepts any input size, not only ``im_size``.

    Args:
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W); only validated, the network is size-agnostic.
        blocks: Number of blocks in each of the four stages.
        downsample: ``"stride"`` or ``"avgpool"``, see :class:`BasicBlock`.
        norm: ``instancenorm`` (default), ``batchnorm``, ``groupnorm``, ``layernorm`` or ``none``.

    Attributes:
        feature_dim: 512, the size of :meth:`embed`'s output.
        classifier: ``nn.Linear(512, num_classes)``.
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: tuple[int, int],
        blocks: Sequence[int] = (2, 2, 2, 2),
        downsample: str = "stride",
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        check_shape(channel, num_classes, im_size)
        check_choice("downsample", downsample, DOWNSAMPLES)
        if isinstance(blocks, str) or len(blocks) != len(WIDTHS):
            raise ValueError(f"blocks must list {len(WIDTHS)} stage lengths, got {blocks!r}")
        for count in blocks:
            check_positive_int("blocks[i]", count)
        # CIFAR-style stem: no 7x7 stride-2 conv or max pool, which would waste small images.
        self.stem = nn.Sequential(
            nn.Conv2d(channel, WIDTHS[0], 3, padding=1, bias=False),
            make_norm(norm, WIDTHS[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        in_channels = WIDTHS[0]
        for stage, (width, count) in enumerate(zip(WIDTHS, blocks, strict=True)):
            for index in range(count):
                layers.append(
                    BasicBlock(in_channels, width, stage > 0 and index == 0, downsample, norm)
                )
                in_channels = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to pooled features (N, feature_dim)."""
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.classifier(self.embed(x))


class ResNet18(ResNet):
    """ResNet-18 (blocks [2, 2, 2, 2], strided downsampling). Options: ``norm``."""

    def __init__(
        self, channel: int, num_classes: int, im_size: tuple[int, int], norm: str = "instancenorm"
    ) -> None:
        super().__init__(
            channel, num_classes, im_size, blocks=(2, 2, 2, 2), downsample="stride", norm=norm
        )


class ResNetAP10(ResNet):
    """ResNetAP-10 from IDC (blocks [1, 1, 1, 1], 2x2 avg-pool downsampling). Options: ``norm``."""

    def __init__(
        self, channel: int, num_classes: int, im_size: tuple[int, int], norm: str = "instancenorm"
    ) -> None:
        super().__init__(
            channel, num_classes, im_size, blocks=(1, 1, 1, 1), downsample="avgpool", norm=norm
        )
