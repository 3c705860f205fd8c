"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

DSA augments real and synthetic images with the *same* random transform before
matching them, and every transform is differentiable w.r.t. the images so the
matching loss reaches the synthetic pixels.

Randomness is explicit: :meth:`DSA.sample` draws all parameters from a CPU
``torch.Generator`` into a :class:`DSATransform`, which can then be applied to any
number of batches (on any device). A transform sampled with ``batch_size=None`` is
*siamese*: one parameter set shared by every image, so a real batch and a synthetic
batch of different sizes get the identical transform.

Example::

    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    t = dsa.sample(generator, image_size=(32, 32))
    loss = match(net(t(x_real)), net(t(x_syn)))
"""

from rdd.augment.config import MODES, OPS, DSAConfig, parse_strategy, strategy_without_flip
from rdd.augment.config import PARAM_KEYS as PARAM_KEYS
from rdd.augment.dsa import DSA, DSATransform
from rdd.augment.ops import cutout_side as cutout_side

__all__ = [
    "OPS",
    "MODES",
    "DSAConfig",
    "DSA",
    "DSATransform",
    "parse_strategy",
    "strategy_without_flip",
]
