"""A LightningDataModule holding a whole real dataset in memory, normalised."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from rdd.config.errors import UserError
from rdd.data.cache import cache_file_name, load_dataset
from rdd.data.sources import check_source
from rdd.data.subgroup import Subgroup
from rdd.data.zca import ZCA, load_or_fit


class RealDataModule(L.LightningDataModule):
    """Real train/val/test data as normalised float tensors in memory.

    The constructor arguments are the keys of ``conf/data/*.yaml``. ``setup()`` decodes (or
    loads from the cache) the dataset, carves a stratified validation split out of the
    training data and normalises everything; with ``zca=True`` it instead whitens the raw
    [0, 1] pixels with a ZCA transform fitted on the train split (as MTT does; the per-channel
    ``mean``/``std`` are then not applied; cached in ``cache_dir``). With ``subgroup``
    (see :mod:`rdd.data.subgroup`) a seeded fraction of every class's train and val images is
    altered first, in pixel space, so the normalisation and the ZCA fit see the altered split.

    Args (the data keys; conf/data/<dataset>.yaml lists only what a dataset changes):
        name: the source (``digits``, ``cifar10``, ..., ``image_folder``).
        root: where the files are; download: let torchvision fetch them.
        layout: ``auto`` | ``torchvision`` | ``image_folder`` (root/{train,test}/<class>/).
        classes: folder/class names to keep, in label order; None: all.
        image_size: an int or [h, w] to resize to; None: the native size.
        mean, std: per-channel normalisation (not applied with ``zca``).
        val_fraction: held out of train per class, for model selection (0: none).
        split_seed: seeds that split. batch_size, num_workers: the loaders (data is in memory).
        cache_dir: where decoded datasets and ZCA fits are cached.
        dsa_strategy: the dataset's DSA operations (no flips for digits/MNIST/SVHN).
        zca, zca_eps: ZCA whitening of raw pixels fitted on the train split (MTT).
        subgroup: a known rare subgroup: a transform name (grayscale | invert | blur) or
            {transform: invert, fraction: 0.05, seed: 0} (:mod:`rdd.data.subgroup`).

    Attributes (after ``setup()``):
        train_x, val_x, test_x: float32 (N, C, H, W), normalised with ``mean``/``std``
            (and whitened with ``zca`` when it is set).
        zca: the :class:`rdd.data.zca.ZCA` applied to the data, or None.
        subgroup: the parsed ``data.subgroup`` (:class:`rdd.data.subgroup.Subgroup`), or None.
        train_subgroup, val_subgroup: bool (N,), which train/val images were altered, or None.
        train_y, val_y, test_y: int64 (N,).
        channel: C. im_size: (H, W). num_classes: int. class_names: list[str].
    """

    def __init__(
        self,
        name: str,
        root: str | None = None,
        download: bool = False,
        layout: str = "auto",
        classes: Sequence[str] | None = None,
        image_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        cache_dir: str | None = None,
        dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
        zca: bool = False,
        zca_eps: float = 0.1,
        subgroup: str | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name, self.root, self.download, self.layout = name, root, bool(download), layout
        self.classes = None if classes is None else [str(c) for c in classes]
        self.image_size = (
            image_size
            if image_size is None or isinstance(image_size, int)
            else [int(s) for s in image_size]
        )
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise UserError(
                f"data.mean={list(self.mean)} and data.std={list(self.std)} must be "
                "non-empty lists of equal length with std > 0: fix them"
            )
        if not 0.0 <= val_fraction <= 0.5:
            raise UserError(
                f"data.val_fraction={val_fraction} is outside [0, 0.5]: set e.g. data.val_fraction=0.1"
            )
        self.val_fraction, self.split_seed = float(val_fraction), int(split_seed)
        if not 0.0 < zca_eps < float("inf"):
            raise UserError(f"data.zca_eps={zca_eps} must be > 0: set e.g. data.zca_eps=0.1")
        self.use_zca, self.zca_eps = bool(zca), float(zca_eps)
        if self.use_zca:
            # As MTT (kornia's ZCAWhitening(eps=0.1) fitted on ToTensor() images): ZCA whitens
            # raw [0, 1] pixels, so eps regularises at that scale and no mean/std is applied.
            self.mean, self.std = (0.0,) * len(self.mean), (1.0,) * len(self.std)
        self.zca: ZCA | None = None
        self.subgroup = Subgroup.from_config(subgroup)
        self.train_subgroup: torch.Tensor | None = None
        self.val_subgroup: torch.Tensor | None = None
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.cache_dir, self.dsa_strategy = cache_dir, dsa_strategy
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = self.test_y = None
        self.channel: int | None = None
        self.im_size: tuple[int, int] | None = None
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None

    def check_source(self) -> None:
        """What :meth:`setup` would refuse that needs no decoding (a missing root, the wrong
        layout, a named dataset's classes missing), in a second: call it before any work."""
        check_source(self.name, self.root, self.download, self.layout, self.classes)

    def setup(self, stage: str | None = None) -> None:
        """Load, split and normalise the data (once; later calls do nothing)."""
        if self.train_x is not None:
            return
        data = load_dataset(
            self.name,
            self.root,
            self.download,
            self.layout,
            self.classes,
            self.image_size,
            self.cache_dir,
        )
        self.channel = int(data.train_x.shape[1])
        if len(self.mean) != self.channel:
            raise UserError(
                f"data.mean/std have {len(self.mean)} values but '{self.name}' images have "
                f"{self.channel} channels: give {self.channel} values each"
            )
        self.im_size = (int(data.train_x.shape[2]), int(data.train_x.shape[3]))
        self.class_names = list(data.classes)
        self.num_classes = len(self.class_names)
        train_idx, val_idx = stratified_split(
            data.train_y, self.num_classes, self.val_fraction, self.split_seed
        )
        train_uint8, self.train_y = data.train_x[train_idx], data.train_y[train_idx]
        val_uint8, self.val_y = data.train_x[val_idx], data.train_y[val_idx]
        if self.subgroup is not None:
            self.subgroup.check_channels(self.channel, self.name)
            train_uint8, self.train_subgroup = self.subgroup.alter(train_uint8, self.train_y)
            # Val gets the same mix (its own seed), so model selection sees the subgroup too.
            val_uint8, self.val_subgroup = self.subgroup.alter(val_uint8, self.val_y, "val")
        self.train_x, self.val_x = self.normalize(train_uint8), self.normalize(val_uint8)
        self.test_x, self.test_y = self.normalize(data.test_x), data.test_y
        # The raw test images: subgroups and shifted test sets are made from them, so they are
        # the same whatever the normalisation or whitening of a run.
        self.test_uint8 = data.test_x
        if self.use_zca:
            # The key names the train split exactly, so a cached fit is only reused for it.
            key = {
                "dataset": cache_file_name(
                    self.name, self.root, self.layout, self.classes, self.image_size
                ),
                "val_fraction": self.val_fraction,
                "split_seed": self.split_seed,
                "mean": self.mean,
                "std": self.std,
            }
            if self.subgroup is not None:  # fitted on the altered split; old keys unchanged
                key["subgroup"] = self.subgroup.key()
            zca = load_or_fit(
                self.train_x, self.zca_eps, self.cache_dir, json.dumps(key, sort_keys=True)
            )
            self._whiten(zca)

    def apply_zca(self, zca: ZCA) -> None:
        """Whiten train/val/test with a given (e.g. a synthetic set's stored) transform.

        Raises:
            ValueError: the data is already whitened, or ``zca`` was fitted on other image sizes.
        """
        self.setup()
        if self.zca is not None:
            raise ValueError(
                "the data is already ZCA-whitened: build the data module with zca=false to "
                "apply another transform"
            )
        self._whiten(zca)

    def _whiten(self, zca: ZCA) -> None:
        self.train_x = zca.whiten(self.train_x)
        self.val_x = zca.whiten(self.val_x)
        self.test_x = zca.whiten(self.test_x)
        self.zca = zca

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1)  # broadcasts over (C, H, W) and (N, C, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 in [0, 255] or float in [0, 1], (..., C, H, W) -> normalised float32."""
        mean, std = self._stats(x)
        if x.dtype == torch.uint8:
            # In place on the fresh float copy: whole datasets are large (CIFAR-10: 600 MB).
            return x.float().div_(255.0).sub_(mean).div_(std)
        return (x.float() - mean) / std

    def test_pixels(self) -> torch.Tensor:
        """The test images as float32 (N, C, H, W) in [0, 1], before normalisation/whitening."""
        self.setup()
        return self.test_uint8.float() / 255.0

    def subgroup_test_set(self) -> tuple[str, torch.Tensor] | None:
        """The known subgroup's name and the fully altered test set, float32 (N, C, H, W) in
        the model's input space like ``test_x`` (same labels and order); None without one."""
        self.setup()
        if self.subgroup is None:
            return None
        altered = self.subgroup.apply(self.test_uint8)
        return self.subgroup.transform, self.from_pixels(altered.float() / 255.0)

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] -> the model's input space (normalised, whitened with ``zca``)."""
        x = self.normalize(x)
        return x if self.zca is None else self.zca.whiten(x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (and whitened, when ``zca`` is set) (N, C, H, W) or (C, H, W) -> float
        in [0, 1] (clamped), e.g. for saving images."""
        if self.zca is not None:
            x = self.zca.unwhiten(x)
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def _loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> DataLoader:
        if x is None:
            raise RuntimeError(
                "RealDataModule.setup() must be called before asking for a dataloader"
            )
        # Seeded from the global seed, so seed_everything(s) fixes the order per run.
        gen = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
        return DataLoader(
            TensorDataset(x, y),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=gen,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x (B, C, H, W), y (B,))``."""
        return self._loader(self.train_x, self.train_y, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in fixed order."""
        return self._loader(self.val_x, self.val_y, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in fixed order."""
        return self._loader(self.test_x, self.test_y, shuffle=False)


def stratified_split(
    y: torch.Tensor, num_classes: int, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices per class: ``val_fraction`` of each class (at least one) goes to val.

    A class with a single image keeps it in train. The split depends only on ``seed``.

    Args:
        y: int64 labels (N,).
        num_classes: Number of classes.
        val_fraction: Fraction of each class held out, in [0, 0.5].
        seed: Seed of the ``torch.Generator`` drawing the split.

    Returns:
        Sorted train indices and sorted val indices (int64), disjoint, covering ``range(N)``.
    """
    gen = torch.Generator().manual_seed(seed)
    val = []
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        n_val = (
            0 if val_fraction <= 0 else min(max(1, round(val_fraction * len(idx))), len(idx) - 1)
        )
        val.append(idx[torch.randperm(len(idx), generator=gen)[:n_val]])
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[torch.cat(val) if val else torch.zeros(0, dtype=torch.int64)] = True
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()
