"""Parity of rdd's DC gradient matching with the reference (VICO-UoE/DatasetCondensation).

Feeds both implementations the same inputs -- seeded real and synthetic CIFAR-shaped batches,
the same ConvNet-3 weights (rdd's network, seeded, copied into the reference's ConvNet), the
same labels -- and compares, per class: the layer-wise matching loss (reference
``utils.match_loss`` with ``dis_metric='ours'``), the synthetic images' gradient of the summed
loss, and two inner-loop epochs of the network on the synthetic set (reference ``utils.epoch``
with ``SGD(lr=0.01)``, as its main.py builds it). Prints the max relative difference per
quantity and, with ``--record``, writes the reference's values to the test fixture that
``tests/matching/test_parity.py`` checks rdd against on every ``make test``.

Usage (a checkout of the reference, outside this repository; nothing of it is copied here):

    git --git-dir=<mirror>/repo archive HEAD | tar -x -C /tmp/vico
    .venv/bin/python benchmarks/parity/dc_parity.py /tmp/vico [--record]

The reference runs unpatched on current PyTorch for these functions (CPU).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
sys.path.insert(0, str(REPO / "src"))

from rdd.matching.gradient import GradientMatching  # noqa: E402
from rdd.nets import build_net  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_dc.pt"
CLASSES, IPC, BATCH_REAL, SIZE = 3, 2, 16, 32
INNER_EPOCHS = 2  # two SGD steps: a momentum term would show in the second


def inputs() -> dict[str, torch.Tensor]:
    """The shared inputs, regenerated from seeds (the test rebuilds them the same way)."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(CLASSES, BATCH_REAL, 3, SIZE, SIZE, generator=gen)
    syn = torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=gen)
    return {"real": real, "syn": syn}


def rdd_net(num_classes: int = CLASSES) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("convnet", 3, num_classes, (SIZE, SIZE))


def rdd_figures() -> dict[str, torch.Tensor]:
    """rdd's loss per class, image gradient and the network after one inner epoch."""
    data = inputs()
    net, matcher = rdd_net(), GradientMatching(batch_real=BATCH_REAL)
    # the matching step's own path: a backward per class (the reference: one of the sum)
    fixed = common.FixedBatches(data["real"].flatten(0, 1), data["syn"], CLASSES, IPC)
    losses = fixed.summed_image_step(matcher.class_loss_terms(net, fixed))
    image_grad = fixed.images.grad
    ctx = types.SimpleNamespace(
        images=data["syn"],
        labels=torch.arange(CLASSES).repeat_interleave(IPC),
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
    )
    before = [p.detach().clone() for p in net.parameters()]
    matcher.train_net(net, matcher.net_optimizer(net), ctx, INNER_EPOCHS)
    return {
        "losses": losses,
        "image_grad": image_grad,
        "net_update": update_signature(before, net),
    }


def reference_figures(ref: Path) -> dict[str, torch.Tensor]:
    """The same quantities computed by the reference's own functions."""
    sys.path.insert(0, str(ref))
    import utils  # the reference's utils.py

    args = types.SimpleNamespace(dis_metric="ours", device="cpu", dsa=False)
    net = utils.get_network("ConvNet", 3, CLASSES, (SIZE, SIZE))
    ours = rdd_net()
    common.copy_weights(net, ours)
    data = inputs()
    params = list(net.parameters())
    syn = data["syn"].clone().requires_grad_(True)
    losses = []
    for c in range(CLASSES):
        real = data["real"][c]
        lab_real = torch.full((len(real),), c, dtype=torch.long)
        gw_real = [
            g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), lab_real), params)
        ]
        img_syn = syn[c * IPC : (c + 1) * IPC]
        lab_syn = torch.full((IPC,), c, dtype=torch.long)
        gw_syn = torch.autograd.grad(
            F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True
        )
        losses.append(utils.match_loss(gw_syn, gw_real, args))
    losses = torch.stack(losses)
    (image_grad,) = torch.autograd.grad(losses.sum(), syn)
    labels = torch.arange(CLASSES).repeat_interleave(IPC)
    loader = torch.utils.data.DataLoader(
        utils.TensorDataset(syn.detach(), labels), batch_size=256, shuffle=True
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)  # main.py's optimizer_net
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(INNER_EPOCHS):
        utils.epoch("train", loader, net, optimizer, torch.nn.CrossEntropyLoss(), args, aug=False)
    return {
        "losses": losses.detach(),
        "image_grad": image_grad,
        "net_update": update_signature(before, net),
    }


def update_signature(before: list[torch.Tensor], net: torch.nn.Module) -> torch.Tensor:
    """A small fingerprint of one training epoch's parameter update (the full update of a
    ConvNet-3 is 320k numbers): per parameter tensor its norm and its projection on a seeded
    random direction, (2 * tensors,) float64. Any differing update changes the projections."""
    gen = torch.Generator().manual_seed(1)
    parts = []
    for old, new in zip(before, net.parameters(), strict=True):
        update = (new.detach() - old).double()
        direction = torch.randn(update.shape, generator=gen, dtype=torch.float64)
        parts += [update.norm(), (update * direction).sum()]
    return torch.stack(parts)


if __name__ == "__main__":
    common.main(
        __doc__, FIXTURE, "checkout of VICO-UoE/DatasetCondensation", reference_figures, rdd_figures
    )
