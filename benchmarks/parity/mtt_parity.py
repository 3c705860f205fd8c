"""Parity of rdd's MTT student unroll and loss with GeorgeCazenavette/mtt-distillation.

The reference's student is its ``ReparamModule`` around its ConvNet-3; its unroll and loss are
the body of distill.py's training loop (not a function), followed here step by step: ``syn_steps``
SGD steps ``theta - syn_lr * grad CE`` kept differentiable, then ``||theta_N - target||^2 /
||start - target||^2`` (both divided by the parameter count, which cancels). Both get the same
seeded synthetic images, labels, learned step size, start/target parameters (rdd's ConvNet
weights, seeded, as the flat start vector) and mini-batch permutations (batch_syn 2, the same
seed for the reference's global generator and rdd's); compared: the loss and its gradients with respect to
the images and the step size. Prints the max relative difference; ``--record`` writes the
reference's values to the fixture ``tests/matching/test_parity.py`` checks.

    for f in reparam_module.py networks.py utils.py; do git --git-dir=<mirror> show HEAD:$f > /tmp/mtt/$f; done
    PYTHONPATH=<kornia> .venv/bin/python benchmarks/parity/mtt_parity.py /tmp/mtt [--record]

(its utils.py imports kornia and tqdm; DSA is off here: augmentation parity is dsa_parity.py's.)
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
sys.path.insert(0, str(REPO / "src"))

from rdd.experts import unflatten  # noqa: E402
from rdd.matching.trajectory import TrajectoryMatching  # noqa: E402
from rdd.nets import build_net  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_mtt.pt"
CLASSES, IPC, SIZE, SYN_STEPS, LR = 3, 2, 32, 4, 0.01
BATCH_SYN = 2  # 3 mini-batches per pass: 4 steps take one pass and start a second


def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build_net("convnet", 3, CLASSES, (SIZE, SIZE))
    start = nn.utils.parameters_to_vector(net.parameters()).detach()
    gen = torch.Generator().manual_seed(0)
    return {
        "images": torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=gen),
        "labels": torch.arange(CLASSES).repeat_interleave(IPC),
        "start": start,
        "target": start + 0.01 * torch.randn(start.shape, generator=gen),
    }


def rdd_figures(memory: str = "full") -> dict[str, torch.Tensor]:
    data = inputs()
    matcher = TrajectoryMatching(dsa=False, syn_steps=SYN_STEPS, batch_syn=BATCH_SYN, memory=memory)
    net = build_net("convnet", 3, CLASSES, (SIZE, SIZE))
    ctx = types.SimpleNamespace(
        images=nn.Parameter(data["images"].clone()),
        labels=data["labels"],
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
        syn_lr=nn.Parameter(torch.tensor(LR)),
    )
    student = matcher.unroll(ctx, net, unflatten(data["start"], net))
    target = unflatten(data["target"], net)
    loss = matcher.normalised_distance(student, target, data["start"], data["target"])
    image_grad, lr_grad = torch.autograd.grad(loss, [ctx.images, ctx.syn_lr])
    return {"loss": loss.detach(), "image_grad": image_grad, "lr_grad": lr_grad}


def reference_figures(ref: Path) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(ref))
    from reparam_module import ReparamModule
    from utils import get_network

    data = inputs()
    student_net = ReparamModule(get_network("ConvNet", 3, CLASSES, (SIZE, SIZE), dist=False))
    student_net.train()
    image_syn = data["images"].clone().requires_grad_(True)
    syn_lr = torch.tensor(LR).requires_grad_(True)
    num_params = sum(p.numel() for p in student_net.parameters())
    starting_params, target_params = data["start"], data["target"]
    student_params = [starting_params.clone().requires_grad_(True)]
    indices_chunks: list[torch.Tensor] = []
    torch.manual_seed(0)  # its permutations come from the global generator: rdd's seed
    for _ in range(SYN_STEPS):  # distill.py's loop, no DSA
        if not indices_chunks:
            indices_chunks = list(torch.split(torch.randperm(len(image_syn)), BATCH_SYN))
        these_indices = indices_chunks.pop()
        x = student_net(image_syn[these_indices], flat_param=student_params[-1])
        ce_loss = F.cross_entropy(x, data["labels"][these_indices])
        grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    param_loss = F.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
    param_dist = F.mse_loss(starting_params, target_params, reduction="sum") / num_params
    loss = param_loss / param_dist
    image_grad, lr_grad = torch.autograd.grad(loss, [image_syn, syn_lr])
    return {"loss": loss.detach(), "image_grad": image_grad, "lr_grad": lr_grad}


if __name__ == "__main__":
    common.main(
        __doc__, FIXTURE, "folder with the reference's .py files", reference_figures, rdd_figures
    )
