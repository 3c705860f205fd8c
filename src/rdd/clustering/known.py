"""The known subgroup as the groups: an oracle clustering for ablations (``clustering=known``).

With ``data.subgroup`` the data module knows which training images were altered. This
clusterer makes that the grouping: two groups per class, its common images (id ``2c``) and its
altered ones (id ``2c + 1``). It answers the question k-means cannot: does a risk help when
the groups are exactly the subgroup it is scored on? (The group-DRO literature's "known group
labels" setting, e.g. Sagawa et al. 2020.) Nothing is fitted: the table is fixed, so it is
built once, at iteration 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rdd.clustering.base import Grouping, _check_images
from rdd.config.errors import UserError

GROUPS_PER_CLASS = 2  # common, altered
NO_SUBGROUP = (
    "clustering=known groups the images by their known subgroup, but there is none: add "
    "data.subgroup=<transform> (grayscale, invert or blur)"
)


class KnownSubgroups(Grouping):
    """Groups from a known membership mask of the training images.

    Args:
        membership: bool (N,): which training images belong to the known subgroup (the data
            module's ``train_subgroup``); None is refused with what to set.
        name: Config name (``known``).
        seed: Unused (nothing is drawn); kept so that every clusterer takes the run's seed.
    """

    def __init__(
        self, membership: Tensor | None = None, name: str = "known", seed: int = 0
    ) -> None:
        super().__init__(name, 1, None, "pixels", None, seed)
        if membership is None:
            raise UserError(NO_SUBGROUP)
        self.register_buffer("membership", membership.detach().to("cpu", torch.bool))

    def due(self, iteration: int) -> bool:
        """Only at iteration 0: the groups never change (a refit would only reset the risks)."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return iteration == 0

    @property
    def fitted(self) -> bool:
        return True

    def num_groups(self, num_classes: int, ipc: int | None = None) -> int:
        return GROUPS_PER_CLASS * num_classes

    def pool(self, labels: Tensor, num_classes: int, iteration: int = 0) -> Tensor:
        """Nothing to fit on: no images."""
        return torch.empty(0, dtype=torch.int64)

    def fit(self, images: Tensor, labels: Tensor, *args: object, **kwargs: object) -> Tensor:
        """No-op (the groups are known); returns no assignments."""
        return torch.empty(0, dtype=torch.int64, device=labels.device)

    def assign(
        self,
        images: Tensor,
        labels: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> Tensor:
        """Group of every training image, ``2 * label + altered``: (N,) int64.

        Only the training set the mask was made for can be assigned (the membership of an
        image is not a function of its pixels).
        """
        _check_images(images, labels)
        if len(labels) != len(self.membership):
            raise ValueError(
                f"clustering=known assigns the {len(self.membership)} training images its mask "
                f"describes, got {len(labels)} images"
            )
        altered = self.membership.to(labels.device).long()
        return GROUPS_PER_CLASS * labels.long() + altered

    def extra_repr(self) -> str:
        return f"name={self.name!r}, altered={int(self.membership.sum())}/{len(self.membership)}"
