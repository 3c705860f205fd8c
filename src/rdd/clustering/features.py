"""Feature spaces of the clusterers: a network's ``embed()`` in batches, a saved fixed net,
low-level style statistics."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from rdd.config.errors import UserError

FEATURE_SPACES = ("embedding", "pixels", "fixed_net", "style", "style_error")
# Images per forward pass when computing features: bounds memory on large pools.
FEATURE_BATCH = 512
# What style_statistics returns, in order (the benchmark tables name the dimensions by these).
STYLE_NAMES = (
    "luma",
    "yellow_blue",
    "red_green",
    "log_contrast",
    "log_chroma",
    "log_detail",
    "top_bottom",
)
# Floor of the statistics taken in log: an exactly grey or flat image stays finite.
LOG_FLOOR = 1e-6
# The linear probe of ``style_error``: it sees PROBE_SIZE x PROBE_SIZE thumbnails (48 inputs for
# colour), few enough that a pool of a few hundred images per class fits it without memorising
# a 5 % subgroup; a small L2 penalty and a fixed number of full-batch L-BFGS steps from zero
# weights make the fit deterministic.
PROBE_SIZE = 4
PROBE_L2 = 1e-3
PROBE_STEPS = 100
PROBE_BUFFERS = ("probe_centre", "probe_scale", "probe_weight", "probe_bias")
# The default smallest scale of the probe's loss column, in nats (``clustering.loss_floor``).
# Where the probe classifies almost every image (digits), the loss's MAD is a few hundredths
# of a nat and its few misfits land tens of MADs out, so k-means spends a cluster on them
# whether or not a rare subgroup exists. One bit (ln 2 nats: a class half as probable) is the
# least difference counted as one. Where the probe errs often, as on CIFAR-10 (the loss's
# MAD-sigma 0.72-0.85 nats with 2-10 % of a class altered), the MAD governs and the floor
# changes nothing (benchmarks/subgroup_shift/README.md, section 16).
LOSS_SCALE_FLOOR = math.log(2)
# MAD of a normal distribution is 0.6745 sigma: this factor makes the robust scale a sigma.
MAD_TO_SIGMA = 1.4826


@torch.no_grad()
def embed_in_batches(net: nn.Module, images: Tensor, batch_size: int = FEATURE_BATCH) -> Tensor:
    """``net.embed`` of ``images`` in eval mode, batch by batch, without gradients.

    Args:
        net: A network with ``embed(x) -> (B, D)``; its training flag is restored afterwards.
        images: (N, C, H, W), on any device; batches are moved to the network's device.
        batch_size: Images per forward pass.

    Returns:
        Features (N, D), float32 on the CPU.
    """
    if not callable(getattr(net, "embed", None)):
        raise ValueError(f"{type(net).__name__} has no embed() method to compute features with")
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    was_training = net.training
    # Eval mode: batch norm must use its running statistics, not those of each feature batch.
    net.eval()
    try:
        chunks = [
            net.embed(images[start : start + batch_size].to(device)).flatten(1).float().cpu()
            for start in range(0, images.shape[0], batch_size)
        ]
    finally:
        net.train(was_training)
    if not chunks:
        raise ValueError("cannot compute features of an empty set of images")
    return torch.cat(chunks)


def load_feature_net(
    path: str | Path, channel: int, num_classes: int | None, im_size: tuple[int, int]
) -> nn.Module:
    """Load a fixed feature network saved as ``{"config": ..., "state_dict": ...}``.

    ``config`` is a plain dict net config with ``_target_`` (as in ``conf/net``, e.g. from
    ``OmegaConf.to_container``); the file may also hold ``channel``, ``num_classes`` and
    ``im_size``, which then win over the arguments. The file is read with
    ``weights_only=True``, so it can hold only tensors and plain containers.

    Args:
        path: The torch file.
        channel: Input channels of the images, used unless the file says otherwise.
        num_classes: Logits of the saved classifier, used unless the file says otherwise.
        im_size: Input (H, W), used unless the file says otherwise.

    Returns:
        The network in eval mode, on the CPU.

    Raises:
        UserError: If the file is missing, unreadable, lacks a key, or does not fit the net.
    """
    from rdd.nets import build_net  # the nets package is heavy; clustering on pixels skips it

    path = Path(path)
    if not path.is_file():
        raise UserError(f"clustering.feature_net file {path} does not exist: give a saved net")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (pickle, zip, EOF) for a bad file
        raise UserError(
            f"clustering.feature_net file {path} cannot be read as a torch file ({error!s:.200})"
        ) from error
    if not isinstance(saved, dict) or not {"config", "state_dict"} <= saved.keys():
        raise UserError(
            f"clustering.feature_net file {path} must hold a dict with 'config' (net config "
            f"with _target_) and 'state_dict'"
        )
    num_classes = saved.get("num_classes", num_classes)
    if num_classes is None:
        raise UserError(
            f"clustering.feature_net file {path} has no 'num_classes': save it in the file"
        )
    try:
        net = build_net(
            saved["config"],
            int(saved.get("channel", channel)),
            int(num_classes),
            tuple(saved.get("im_size", im_size)),
        )
        net.load_state_dict(saved["state_dict"])
    except Exception as error:  # a wrong config or shape: say which file is at fault
        raise UserError(
            f"clustering.feature_net file {path} does not build the saved network ({error!s:.300})"
        ) from error
    return net.eval()


def _colour_means(images: Tensor) -> Tensor:
    """Mean luminance and two colour opponents, (N, 3): brightness counts once, not three times
    as it would in per-channel means (R, G and B means are strongly correlated)."""
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"clustering.features=style needs 1- or 3-channel images, got {images.shape[1]}"
        )
    means = images.mean(dim=(2, 3))
    luma = means.mean(1)
    if images.shape[1] == 1:  # no colour: constant opponents, which the scaling ignores
        return torch.stack([luma, torch.zeros_like(luma), torch.zeros_like(luma)], 1)
    red, green, blue = means.unbind(1)
    return torch.stack([luma, red + green - 2 * blue, red - green], 1)


def _style_batch(images: Tensor) -> Tensor:
    """:func:`style_statistics` of one batch, (B, C, H, W) -> (B, 7) on the images' device."""
    x = images.float()
    variance = x.var(dim=(2, 3), unbiased=False).mean(1)
    # Chroma: per-pixel spread over the channels, after centring every channel of the image,
    # so that the per-channel normalisation (different means) does not colour a grey image.
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    chroma = centred.std(dim=1, unbiased=False).mean(dim=(1, 2))
    # Detail: energy of a 3x3 Laplacian relative to the image's variance (scale-free).
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], device=x.device).view(1, 1, 3, 3)
    laplacian = nn.functional.conv2d(x.flatten(0, 1).unsqueeze(1), kernel)
    energy = laplacian.pow(2).flatten(1).mean(1).view(x.shape[0], -1).mean(1)
    detail = energy / variance.clamp_min(LOG_FLOOR)  # a flat image: 0, not 0 / 0
    luma = x.mean(1)
    half = x.shape[2] // 2
    top_bottom = luma[:, :half].mean(dim=(1, 2)) - luma[:, half:].mean(dim=(1, 2))
    logs = torch.stack([variance.sqrt(), chroma, detail], 1).clamp_min(LOG_FLOOR).log()
    return torch.cat([_colour_means(x), logs, top_bottom.unsqueeze(1)], 1)


@torch.no_grad()
def style_statistics(images: Tensor, batch_size: int = FEATURE_BATCH) -> Tensor:
    """Seven low-level statistics per image that a rare "style" subgroup changes.

    A shift such as grayscale, inversion or blur changes how an image is rendered, not what it
    shows, so a generic net's embedding (dominated by content) or the pixels (dominated by
    layout) do not single it out. These statistics describe the rendering only:

    - ``luma``, ``yellow_blue``, ``red_green``: mean luminance and mean colour opponents
      ((R + G - 2B), (R - G)); the global colour cast (an inverted image has its class's
      complementary colours);
    - ``log_contrast``: log of the per-channel standard deviation, averaged;
    - ``log_chroma``: log of the mean per-pixel spread over channels (colourfulness); zero
      for a grey image, which the log puts far from every coloured one;
    - ``log_detail``: log of the 3x3 Laplacian energy over the image's variance
      (high-frequency content, scale-free); blur shrinks it by orders of magnitude;
    - ``top_bottom``: mean luminance of the upper minus the lower half (coarse layout:
      sky above ground; inversion flips it).

    Deterministic (no network, no randomness); single-channel images get zero colour. On
    CIFAR-10 with 5% of every class altered, per-class k-means (k=5) on them isolates grey and
    blurred images but not inverted ones (benchmarks/subgroup_shift/discovery.md); with
    ``data.zca`` the images are whitened, which mixes the channels, and grey images are then
    found far less well.

    Args:
        images: (N, C, H, W) with C in {1, 3}, H and W >= 3, as the learner holds them
            (normalised or ZCA-whitened: the statistics are then of those pixels).
        batch_size: Images per batch, bounds memory.

    Returns:
        (N, 7) float32 on the CPU, columns in the order of ``STYLE_NAMES``.
    """
    if images.dim() != 4 or min(images.shape[2:]) < 3:
        raise ValueError(
            f"style statistics need images (N, C, H, W) with H, W >= 3, got {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("cannot compute features of an empty set of images")
    chunks = [
        _style_batch(images[start : start + batch_size]).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)


def robust_scaling(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension median and MAD-based scale (a sigma for normal data), (D,) each.

    Why not the mean and standard deviation: a 5% subgroup far out in one dimension inflates
    that dimension's standard deviation, so z-scores cap its distance to the bulk at a few
    units and k-means splits the bulk along the other dimensions instead. The median and MAD
    are those of the bulk, so the subgroup stays as far out as it is. A constant dimension
    (zero MAD) gets scale 1 and then contributes nothing.

    Args:
        features: (N, D).

    Returns:
        ``(centre, scale)``, (D,) float32 each; standardise with ``(x - centre) / scale``.
    """
    centre = features.median(dim=0).values
    scale = (features - centre).abs().median(dim=0).values * MAD_TO_SIGMA
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return centre.float(), scale.float()


def probe_inputs(images: Tensor, batch_size: int = FEATURE_BATCH) -> Tensor:
    """PROBE_SIZE x PROBE_SIZE average-pooled thumbnails, flattened: (N, C * 16) on the CPU."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    chunks = [
        nn.functional.adaptive_avg_pool2d(images[start : start + batch_size].float(), PROBE_SIZE)
        .flatten(1)
        .cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    if not chunks:
        raise ValueError("cannot compute features of an empty set of images")
    return torch.cat(chunks)


def fit_linear_probe(images: Tensor, labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """A multinomial logistic regression of the class on :func:`probe_inputs`, fitted on a pool.

    The simple classifier of ``clustering.features=style_error``: its per-image cross-entropy
    is the error-set signal of JTT-style group discovery, from a model too simple to memorise
    a rare subgroup (JTT early-stops a deep net for the same reason), so the images its class's
    majority does not explain keep a high loss. Standardised inputs, zero start, L2
    ``PROBE_L2``, ``PROBE_STEPS`` full-batch L-BFGS steps: deterministic on a CPU.

    Args:
        images: The pooled real images, (N, C, H, W).
        labels: Their classes, (N,) in [0, num_classes).
        num_classes: Number of classes (logits).

    Returns:
        The probe's tensors, named as ``PROBE_BUFFERS``: input centre and scale (D,), weight
        (D, num_classes), bias (num_classes,); float32 on the CPU.
    """
    inputs = probe_inputs(images)
    targets = labels.detach().to("cpu", torch.int64)
    centre = inputs.mean(0)
    scale = inputs.std(0).clamp_min(LOG_FLOOR)
    standard = (inputs - centre) / scale
    weight = torch.zeros(inputs.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=PROBE_STEPS, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        logits = standard @ weight + bias
        loss = nn.functional.cross_entropy(logits, targets) + PROBE_L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers may hold no_grad (a distillation step's feature pass)
        optimiser.step(closure)
    return {
        "probe_centre": centre,
        "probe_scale": scale,
        "probe_weight": weight.detach(),
        "probe_bias": bias.detach(),
    }


def floor_loss_scale(scale: Tensor, floor: float) -> Tensor:
    """``style_error``'s scale (D,) with its last entry, the probe loss's, at least ``floor``."""
    return torch.cat([scale[:-1], scale[-1:].clamp_min(floor)])


@torch.no_grad()
def standard_probe_inputs(images: Tensor, probe: dict[str, Tensor]) -> Tensor:
    """The probe's inputs of ``images`` standardised as a :func:`fit_linear_probe` saw them."""
    return (probe_inputs(images) - probe["probe_centre"]) / probe["probe_scale"]


@torch.no_grad()
def probe_loss(images: Tensor, labels: Tensor, probe: dict[str, Tensor]) -> Tensor:
    """Cross-entropy of every image's own class under a :func:`fit_linear_probe`, (N,) CPU."""
    logits = standard_probe_inputs(images, probe) @ probe["probe_weight"] + probe["probe_bias"]
    targets = labels.detach().to("cpu", torch.int64)
    return nn.functional.cross_entropy(logits, targets, reduction="none")
