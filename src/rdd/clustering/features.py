"""Feature spaces of the clusterers: a network's ``embed()`` in batches, a saved fixed net."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rdd.errors import UserError

FEATURE_SPACES = ("embedding", "pixels", "fixed_net")
# Images per forward pass when computing features: bounds memory on large pools.
FEATURE_BATCH = 512


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
