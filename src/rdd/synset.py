"""The synthetic set: images, labels and the metadata needed to use them anywhere.

A saved set is one ``torch.save`` file holding only tensors, strings and numbers, so it loads
with ``weights_only=True`` (no code runs when a file is opened).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from rdd.config.errors import UserError
from rdd.data.zca import ZCA
from rdd.distill.expansion import expand
from rdd.utils.io import atomic_write, refusal, torch_load_safely

FORMAT = "rdd-synset/1"
FILE_NAME = "synset.pt"
GRID_NAME = "synset.png"
# Images are enlarged by a whole factor to at least this side in the grid (digits: 8 -> 64 px).
GRID_MIN_SIDE = 64
GRID_PAD = 2  # pixels between images


@dataclass
class SyntheticSet:
    """A synthetic training set.

    Attributes:
        images: (N, C, H, W) float, normalised like the real data (see ``meta['mean'/'std']``)
            and, when ``zca`` is set, whitened with it.
        labels: (N,) int64 class indices, grouped by class (ipc images per class).
        meta: dataset, mean, std, num_classes, class_names, ipc, method, config (YAML string),
            zca (bool, written by :meth:`save`).
        zca: the whitening the real data had when the set was made (evaluation applies the
            same one to the real data), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    zca: ZCA | None = None

    @property
    def ipc(self) -> int:
        return int(self.meta["ipc"])

    @property
    def factor(self) -> int:
        """IDM's partition-and-expansion factor (1: every stored image is one image)."""
        return int(self.meta.get("factor", 1))

    def expanded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels a network trains on: each stored image expanded into
        ``factor**2`` full-size images (unchanged for factor 1)."""
        return expand(self.images, self.labels, self.factor)

    def denormalized(self) -> torch.Tensor:
        """Images mapped back to [0, 1] for display (un-whitened first): (N, C, H, W)."""
        images = self.images.detach().cpu()
        if self.zca is not None:
            images = self.zca.unwhiten(images)
        mean = torch.tensor(self.meta["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(self.meta["std"]).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` atomically."""
        payload = {
            "format": FORMAT,
            "images": self.images.detach().cpu().contiguous(),
            "labels": self.labels.detach().cpu(),
            "meta": self.meta | {"zca": self.zca is not None},
        }
        if self.zca is not None:
            payload["zca"] = self.zca.state()
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))

    def save_grid(self, path: str | Path) -> Path:
        """A PNG of the de-normalised images, one row per class with its name on the left,
        small images enlarged (nearest neighbour, so pixels stay sharp) to about
        ``GRID_MIN_SIDE`` pixels."""
        return atomic_write(path, lambda tmp: labelled_grid(self).save(tmp, format="PNG"))

    @classmethod
    def load(cls, path: str | Path) -> SyntheticSet:
        """Load a set written by :meth:`save`; a run directory is accepted too.

        Raises:
            UserError: the path is missing, or the file is damaged, holds code, or is not an
                rdd synthetic set.
        """
        path = resolve_synset_path(path)
        try:
            payload = torch_load_safely(path)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError):
            raise UserError(
                f"synthetic set '{path}' {refusal(path)}: pass a synset.pt written by "
                "python -m rdd.run"
            ) from None
        return cls._from_payload(payload, path)

    @classmethod
    def _from_payload(cls, payload: Any, path: Path) -> SyntheticSet:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UserError(
                f"'{path}' is not an rdd synthetic set (no '{FORMAT}' marker); pass a synset.pt "
                "written by python -m rdd.run"
            )
        images, labels, meta = payload.get("images"), payload.get("labels"), payload.get("meta")
        valid = (
            isinstance(images, torch.Tensor)
            and images.ndim == 4
            and isinstance(labels, torch.Tensor)
            and labels.shape == images.shape[:1]
            and isinstance(meta, dict)
            and {"ipc", "mean", "std", "num_classes", "dataset"} <= meta.keys()
        )
        if not valid:
            raise UserError(
                f"synthetic set '{path}' is damaged (images, labels or metadata missing or "
                "inconsistent); re-create it with python -m rdd.run"
            )
        zca = _stored_zca(payload, images[0].numel(), path)
        return cls(images=images, labels=labels, meta=meta, zca=zca)


def _stored_zca(payload: dict[str, Any], dim: int, path: Path) -> ZCA | None:
    """The set's ZCA transform (None for sets made without one, and for older files)."""
    state = payload.get("zca")
    if state is None:
        if payload["meta"].get("zca"):
            raise UserError(
                f"synthetic set '{path}' is damaged (its metadata says ZCA but the transform is "
                "missing); re-create it with python -m rdd.run"
            )
        return None
    try:
        zca = ZCA.from_state(state)
    except ValueError as err:
        raise UserError(
            f"synthetic set '{path}' has a damaged ZCA transform ({err}); re-create it with "
            "python -m rdd.run"
        ) from None
    if zca.dim != dim:
        raise UserError(
            f"synthetic set '{path}' has a ZCA transform for images of {zca.dim} values, not "
            f"{dim}; re-create it with python -m rdd.run"
        )
    return zca


def resolve_synset_path(path: str | Path) -> Path:
    """Accept a synset file or a run directory that holds one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise UserError(
            f"synthetic set '{path}' not found: pass synset=<run dir or synset.pt> from a finished "
            "python -m rdd.run"
        )
    return path


def labelled_grid(synset: SyntheticSet) -> Image.Image:
    """The grid :meth:`SyntheticSet.save_grid` writes: row c holds class c's images."""
    images = synset.denormalized()
    labels = synset.labels.detach().cpu()
    num_classes = int(synset.meta.get("num_classes", int(labels.max()) + 1))
    names = list(synset.meta.get("class_names") or [])
    names += [str(c) for c in range(len(names), num_classes)]  # sets saved without names
    _, channels, h, w = images.shape
    scale = max(1, -(-GRID_MIN_SIDE // max(h, w)))  # ceil: never shrink
    cell_h, cell_w = h * scale, w * scale
    font = grid_font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 12 + max(int(draw.textlength(name, font=font)) for name in names[:num_classes])
    columns = max(int((labels == c).sum()) for c in range(num_classes))
    canvas = Image.new(
        "RGB",
        (margin + columns * (cell_w + GRID_PAD), GRID_PAD + num_classes * (cell_h + GRID_PAD)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    pixels = (images * 255).round().to(torch.uint8)
    for c in range(num_classes):
        top = GRID_PAD + c * (cell_h + GRID_PAD)
        box = draw.textbbox((0, 0), names[c], font=font)  # centred on the row by hand:
        y = top + (cell_h - (box[3] - box[1])) // 2 - box[1]  # a bitmap font has no anchors
        draw.text((6, y), names[c], fill="black", font=font)
        for i, image in enumerate(pixels[labels == c]):
            array = image.permute(1, 2, 0).numpy()
            tile = Image.fromarray(array[..., 0] if channels == 1 else array)
            tile = tile.convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (margin + i * (cell_w + GRID_PAD), top))
    return canvas


def grid_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at a readable size (its tiny bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=14)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def class_grouped_labels(num_classes: int, ipc: int) -> torch.Tensor:
    """Labels [0]*ipc + [1]*ipc + ...: (num_classes * ipc,) int64."""
    return torch.arange(num_classes).repeat_interleave(ipc)
