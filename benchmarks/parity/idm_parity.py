"""Parity of rdd's IDM class loss with uitrbn/IDM (IDM_cifar10.py, the published --aug run).

Per class, the reference's loss is inline code of IDM_cifar10.py's loop: partition-and-expansion
of the synthetic images (its ``dc_utils.number_sign_augment``), the squared distance of the mean
embeddings (its ``ConvNet.embed_channel_avg`` with ``--embed_last 1000``: every feature layer),
plus ``ce_weight`` x the network's running accuracy (percent) x the cross-entropy of the
expanded synthetic images. It is followed here on the reference's own network and functions;
both implementations get the same seeded batches, weights (rdd's, seeded, copied in), accuracy
and CE weight. Compared: the loss per class and its gradient with respect to the stored
synthetic images. Prints the max relative difference; ``--record`` writes the fixture
``tests/matching/test_parity.py`` checks.

    for f in $(git --git-dir=<mirror> ls-tree --name-only HEAD | grep .py$); do
        git --git-dir=<mirror> show HEAD:$f > /tmp/idm/$f; done
    .venv/bin/python benchmarks/parity/idm_parity.py /tmp/idm [--record]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
sys.path.insert(0, str(REPO / "src"))

from rdd.matching.distribution import DistributionMatching  # noqa: E402
from rdd.nets import build_net  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_idm.pt"
CLASSES, IPC, BATCH_REAL, SIZE = 3, 2, 8, 32
ACCURACY, CE_WEIGHT = 40.0, 0.5  # percent; the published CIFAR-10 IPC 10 weight


def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "real": torch.randn(CLASSES * BATCH_REAL, 3, SIZE, SIZE, generator=gen),
        "syn": torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=gen),
    }


def rdd_net() -> nn.Module:
    torch.manual_seed(0)
    return build_net("convnet", 3, CLASSES, (SIZE, SIZE))


def rdd_figures() -> dict[str, torch.Tensor]:
    ctx, net = common.FixedBatches(**inputs(), classes=CLASSES, ipc=IPC), rdd_net()
    matcher = DistributionMatching(dsa=False, factor=2, ce_weight=CE_WEIGHT, batch_real=BATCH_REAL)
    losses = torch.stack([matcher.class_loss(net, ACCURACY, ctx, c) for c in range(CLASSES)])
    (grad,) = torch.autograd.grad(losses.sum(), ctx.images)
    return {"losses": losses.detach(), "image_grad": grad}


def reference_figures(ref: Path) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(ref))
    from dc_utils import get_network, number_sign_augment

    data = inputs()
    net = get_network("ConvNet", 3, CLASSES, (SIZE, SIZE))
    common.copy_weights(net, rdd_net())
    net.eval()  # as IDM_cifar10.py before matching (no effect on ConvNet's instance norm)
    image_syn = data["syn"].clone().requires_grad_(True)
    label_syn = torch.arange(CLASSES).repeat_interleave(IPC)
    losses = []
    for c in range(CLASSES):
        img_real = data["real"][c * BATCH_REAL : (c + 1) * BATCH_REAL]
        img_syn, lab_syn = number_sign_augment(
            image_syn[c * IPC : (c + 1) * IPC], label_syn[c * IPC : (c + 1) * IPC]
        )
        output_real = net.embed_channel_avg(img_real, last=1000).detach()
        output_syn = net.embed_channel_avg(img_syn, last=1000)
        loss_c = torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
        loss_c = loss_c + F.cross_entropy(net(img_syn), lab_syn) * ACCURACY * CE_WEIGHT
        losses.append(loss_c)
    losses = torch.stack(losses)
    (grad,) = torch.autograd.grad(losses.sum(), image_syn)
    return {"losses": losses.detach(), "image_grad": grad}


if __name__ == "__main__":
    common.main(
        __doc__, FIXTURE, "folder with uitrbn/IDM's .py files", reference_figures, rdd_figures
    )
