"""Parity of rdd's DM loss with VICO-UoE/DatasetCondensation's main_DM.py.

The reference's DM loss is inline code of main_DM.py's loop; it is followed here on the
reference's own networks (``utils.get_network('ConvNet' | 'ConvNetBN')``, their ``embed``),
for both of its branches: ConvNet (a forward per class) and ConvNetBN (all classes through one
forward, so BatchNorm's batch statistics span them). Both implementations get the same seeded
real and synthetic batches and the same network weights (rdd's, seeded, copied in); compared:
the loss and its gradient with respect to the synthetic images. DSA is off (its parity is
dsa_parity.py's). Prints the max relative difference; ``--record`` writes the reference's
values to the fixture ``tests/matching/test_parity.py`` checks.

    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/vico
    .venv/bin/python benchmarks/parity/dm_parity.py /tmp/vico [--record]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
sys.path.insert(0, str(REPO / "src"))

from rdd.matching.distribution import DistributionMatching  # noqa: E402
from rdd.nets import build_net  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_dm.pt"
CLASSES, IPC, BATCH_REAL, SIZE = 3, 2, 8, 32
NETS = {"ConvNet": "convnet", "ConvNetBN": "convnet_bn"}  # reference name -> rdd conf/net


def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "real": torch.randn(CLASSES * BATCH_REAL, 3, SIZE, SIZE, generator=gen),
        "syn": torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=gen),
    }


def rdd_net(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_net(name, 3, CLASSES, (SIZE, SIZE))


def rdd_figures() -> dict[str, torch.Tensor]:
    figures = {}
    for ref_name, name in NETS.items():
        ctx, net = common.FixedBatches(**inputs(), classes=CLASSES, ipc=IPC), rdd_net(name)
        DistributionMatching(dsa=False, batch_real=BATCH_REAL).match_and_step(net, 0.0, ctx)
        (loss,) = ctx.losses  # DM: one image step on the summed loss (a backward per class)
        figures |= {f"{ref_name}/loss": loss, f"{ref_name}/image_grad": ctx.images.grad}
    return figures


def reference_figures(ref: Path) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(ref))
    from utils import get_network

    figures = {}
    data = inputs()
    for ref_name, name in NETS.items():
        net = get_network(ref_name, 3, CLASSES, (SIZE, SIZE))
        common.copy_weights(net, rdd_net(name))
        net.train()
        for param in net.parameters():
            param.requires_grad = False
        image_syn = data["syn"].clone().requires_grad_(True)
        reals = [data["real"][c * BATCH_REAL : (c + 1) * BATCH_REAL] for c in range(CLASSES)]
        syns = [image_syn[c * IPC : (c + 1) * IPC] for c in range(CLASSES)]
        if ref_name == "ConvNet":  # main_DM.py: one forward per class
            loss = sum(
                torch.sum((net.embed(r).detach().mean(0) - net.embed(s).mean(0)) ** 2)
                for r, s in zip(reals, syns, strict=True)
            )
        else:  # its ConvNetBN branch: all classes through one forward
            out_real = net.embed(torch.cat(reals)).detach()
            out_syn = net.embed(torch.cat(syns))
            loss = torch.sum(
                (
                    out_real.reshape(CLASSES, BATCH_REAL, -1).mean(1)
                    - out_syn.reshape(CLASSES, IPC, -1).mean(1)
                )
                ** 2
            )
        (grad,) = torch.autograd.grad(loss, image_syn)
        figures |= {f"{ref_name}/loss": loss.detach(), f"{ref_name}/image_grad": grad}
    return figures


if __name__ == "__main__":
    common.main(
        __doc__, FIXTURE, "checkout of VICO-UoE/DatasetCondensation", reference_figures, rdd_figures
    )
