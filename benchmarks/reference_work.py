"""The work items of ``bench_vs_reference.py``: for each, a reference and an rdd callable that
do the same work and return its seconds (set-up outside the timed part). The reference side
follows the published scripts' loop bodies inline, on the reference's own functions and
networks, imported from the checkout given on the command line.

Both sides run on ``args.device``: data, synthetic images, labels and networks are put there,
and the reference's ``args.device`` is it. The references' ``get_network`` chooses a device
itself ('cuda' whenever CUDA has devices, in DataParallel when it has several), so it builds
its network with the GPUs hidden and the network is then moved, as the published scripts'
``get_network(...).to(args.device)`` does on one GPU (:func:`reference_net`)."""

from __future__ import annotations

import contextlib
import copy
import importlib
import resource
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from bench_mtt_syn_steps import random_expert, rss_mib
from common import NUM_CLASSES, SHAPE, cifar_shaped, plain_learner, synchronize
from torch import nn

from rdd.distill.expansion import pack
from rdd.matching.distribution import DistributionMatching
from rdd.matching.gradient import GradientMatching
from rdd.matching.trajectory import TrajectoryMatching
from rdd.nets import build_net
from rdd.utils.host_memory import keep_freed_host_memory

IPC, STRATEGY = 10, "color_crop_cutout_flip_scale_rotate"
IDM = {"name": "idm", "lr_img": 0.2, "factor": 2, "ce_weight": 0.5, "step_per_class": True}
IDM |= {"queue_size": 100}
LABELS = {
    "dc_match": "DC matching step + image update",
    "dc_inner": "DC inner loop ({epochs} epochs on the synthetic set)",
    "dsa_match": "DSA matching step + image update",
    "dsa_inner": "DSA inner loop ({epochs} epochs)",
    "dm": "DM iteration",
    "idm": "IDM iteration",
}


def reference_module(folder: Path, name: str) -> types.ModuleType:
    """Import ``name`` from the reference checkout ``folder`` (first on sys.path)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


@contextlib.contextmanager
def gpus_hidden():
    """``torch.cuda.device_count()`` is 0 inside: what the references' ``get_network`` reads to
    put a network on 'cuda' (DataParallel on several GPUs) whatever device was asked for."""
    with mock.patch.object(torch.cuda, "device_count", return_value=0):
        yield


def reference_net(module: types.ModuleType, device: torch.device, **kwargs) -> nn.Module:
    """The reference's ``get_network("ConvNet", ...)`` (built on the CPU, one module, no
    DataParallel), then on ``device``."""
    with gpus_hidden():
        net = module.get_network("ConvNet", SHAPE[0], NUM_CLASSES, SHAPE[1:], **kwargs)
    return net.to(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()``; on a GPU until the kernels it queued have run (launches return at
    once), and from when those queued before it have."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def timed_sides(device: torch.device, reference, ours) -> dict:
    return {"reference": lambda: timed(reference, device), "rdd": lambda: timed(ours, device)}


def seeded_net() -> nn.Module:
    torch.manual_seed(0)
    return build_net("convnet", SHAPE[0], NUM_CLASSES, SHAPE[1:])


def copy_weights(reference: nn.Module, ours: nn.Module) -> None:
    with torch.no_grad():
        for theirs, mine in zip(reference.parameters(), ours.parameters(), strict=True):
            theirs.copy_(mine)


class RealPool:
    """The reference scripts' ``get_images``: n random images of class c (numpy permutation),
    from images and labels on ``device`` (their ``images_all``, ``labels_all``)."""

    def __init__(self, real_x: torch.Tensor, real_y: torch.Tensor, device: torch.device) -> None:
        self.x, self.y = real_x.to(device), real_y.to(device)
        self.indices = [torch.nonzero(real_y == c).flatten().tolist() for c in range(NUM_CLASSES)]

    def __call__(self, c: int | None = None, n: int = 0):
        if c is not None:
            return self.x[np.random.permutation(self.indices[c])[:n]]
        flat = [i for rows in self.indices for i in rows]
        idx = np.random.permutation(flat)[:n]
        return self.x[idx], self.y[idx]


# -- DC / DSA: VICO-UoE/DatasetCondensation main.py ---------------------------------------------
def gradient_pair(args, dsa: bool, inner: bool, compile_nets: bool) -> dict:
    utils, device = reference_module(args.vico, "utils"), args.device
    real_x, real_y = cifar_shaped(args.per_class)
    init = real_x[:: args.per_class].repeat_interleave(IPC, 0)
    ref_args = types.SimpleNamespace(dis_metric="ours", device=device, dsa=dsa)
    ref_args.dsa_strategy, ref_args.dsa_param = STRATEGY, utils.ParamDiffAug()
    net = reference_net(utils, device)
    copy_weights(net, seeded_net())
    net.train()
    image_syn = init.to(device, copy=True).requires_grad_(True)
    label_syn = torch.arange(NUM_CLASSES, device=device).repeat_interleave(IPC)
    optimizer_img = torch.optim.SGD([image_syn], lr=0.1, momentum=0.5)
    criterion, get_images, seeds = (
        nn.CrossEntropyLoss().to(device),
        RealPool(real_x, real_y, device),
        iter(range(10**9)),
    )

    def ref_match() -> None:
        net_parameters = list(net.parameters())
        loss = torch.tensor(0.0).to(device)
        for c in range(NUM_CLASSES):
            img_real = get_images(c, 256)
            lab_real = torch.ones((img_real.shape[0],), device=device, dtype=torch.long) * c
            img_syn = image_syn[c * IPC : (c + 1) * IPC].reshape((IPC, *SHAPE))
            lab_syn = torch.ones((IPC,), device=device, dtype=torch.long) * c
            if dsa:  # main.py seeds from the wall clock; a counter here
                seed = next(seeds)
                img_real = utils.DiffAugment(
                    img_real, STRATEGY, seed=seed, param=ref_args.dsa_param
                )
                img_syn = utils.DiffAugment(img_syn, STRATEGY, seed=seed, param=ref_args.dsa_param)
            loss_real = criterion(net(img_real), lab_real)
            gw_real = torch.autograd.grad(loss_real, net_parameters)
            gw_real = list(_.detach().clone() for _ in gw_real)
            loss_syn = criterion(net(img_syn), lab_syn)
            gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
            loss += utils.match_loss(gw_syn, gw_real, ref_args)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss.item()  # main.py's loss_avg += loss.item()

    def ref_inner() -> None:
        optimizer_net = torch.optim.SGD(net.parameters(), lr=0.01)
        image_syn_train = copy.deepcopy(image_syn.detach())
        dst = utils.TensorDataset(image_syn_train, copy.deepcopy(label_syn))
        loader = torch.utils.data.DataLoader(dst, batch_size=256, shuffle=True, num_workers=0)
        for _ in range(args.inner_epochs):
            utils.epoch("train", loader, net, optimizer_net, criterion, ref_args, aug=dsa)

    matcher = GradientMatching(dsa=dsa, compile_nets=compile_nets)
    learner = plain_learner(matcher, init, real_x, real_y, IPC).to(device)
    ours = seeded_net().train().to(device)

    def rdd_match() -> None:
        losses = learner.summed_image_step(matcher.class_loss_terms(ours, learner))
        float(losses.mean())  # step's logged loss

    def rdd_inner() -> None:
        matcher.train_net(ours, matcher.net_optimizer(ours), learner, args.inner_epochs)

    return timed_sides(device, *((ref_inner, rdd_inner) if inner else (ref_match, rdd_match)))


# -- DM: VICO-UoE/DatasetCondensation main_DM.py ------------------------------------------------
def dm_pair(args, compile_nets: bool) -> dict:
    utils, device = reference_module(args.vico, "utils"), args.device
    real_x, real_y = cifar_shaped(args.per_class)
    init = real_x[:: args.per_class].repeat_interleave(IPC, 0)
    param, seeds = utils.ParamDiffAug(), iter(range(10**9))
    get_images = RealPool(real_x, real_y, device)
    image_syn = init.to(device, copy=True).requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=1.0, momentum=0.5)

    def ref_iteration() -> None:
        net = reference_net(utils, device)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0).to(device)
        for c in range(NUM_CLASSES):
            img_real = get_images(c, 256)
            img_syn = image_syn[c * IPC : (c + 1) * IPC].reshape((IPC, *SHAPE))
            seed = next(seeds)
            img_real = utils.DiffAugment(img_real, STRATEGY, seed=seed, param=param)
            img_syn = utils.DiffAugment(img_syn, STRATEGY, seed=seed, param=param)
            output_real = net.embed(img_real).detach()
            output_syn = net.embed(img_syn)
            loss += torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss.item()

    matcher = DistributionMatching(name="dm", lr_img=1.0, compile_nets=compile_nets)
    learner = plain_learner(matcher, init, real_x, real_y, IPC).to(device)
    return timed_sides(device, ref_iteration, lambda: matcher.step(learner))


# -- IDM: uitrbn/IDM IDM_cifar10.py ---------------------------------------------------------
class Accuracy:
    """What torchnet's ClassErrorMeter(accuracy=True) keeps: top-1 accuracy in percent."""

    def __init__(self) -> None:
        self.correct, self.n = 0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct += int((logits.argmax(1) == labels).sum())
        self.n += len(labels)

    def value(self) -> float:
        return 100.0 * self.correct / self.n if self.n else 0.0


def idm_pair(args, compile_nets: bool) -> dict:
    dc_utils, device = reference_module(args.idm, "dc_utils"), args.device
    real_x, real_y = cifar_shaped(args.per_class)
    # IPC images per class whatever --per-class is (the first 100 rows fall short below 10)
    tiles = [real_x[:: args.per_class].repeat_interleave(IPC, 0) for _ in range(4)]
    init = pack(tiles, 2)
    param, seeds = dc_utils.ParamDiffAug(), iter(range(10**9))
    get_images = RealPool(real_x, real_y, device)
    image_syn = init.to(device, copy=True).requires_grad_(True)
    label_syn = torch.arange(NUM_CLASSES, device=device).repeat_interleave(IPC)
    optimizer_img = torch.optim.SGD([image_syn], lr=0.2, momentum=0.5)
    nets: list[tuple[nn.Module, torch.optim.Optimizer, Accuracy]] = []
    criterion, state = nn.CrossEntropyLoss().to(device), {"it": 0}

    def push() -> None:
        net = reference_net(dc_utils, device).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
        nets.append((net, opt, Accuracy()))
        if len(nets) > 100:
            nets.pop(0)

    for _ in range(3):
        push()

    def ref_iteration() -> None:
        if state["it"] % 30 == 0:
            push()
        state["it"] += 1
        order = list(range(len(nets)))
        np.random.shuffle(order)
        net, _, meter = nets[order[0]]  # train_net_num 1
        net.eval()
        for c in range(NUM_CLASSES):
            img_real = get_images(c, 256)
            img_syn = image_syn[c * IPC : (c + 1) * IPC].reshape((IPC, *SHAPE))
            img_syn, lab_syn = dc_utils.number_sign_augment(
                img_syn, label_syn[c * IPC : (c + 1) * IPC]
            )
            seed = next(seeds)
            img_real = dc_utils.DiffAugment(img_real, STRATEGY, seed=seed, param=param)
            img_syn = dc_utils.DiffAugment(img_syn, STRATEGY, seed=seed, param=param)
            output_real = net.embed_channel_avg(img_real, last=1000).detach()
            output_syn = net.embed_channel_avg(img_syn, last=1000)
            loss_c = torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
            logits_syn = net(img_syn)
            F.cross_entropy(logits_syn, lab_syn).detach().item()  # its metrics['syn']
            loss_c = loss_c + F.cross_entropy(logits_syn, lab_syn) * meter.value() * 0.5
            optimizer_img.zero_grad()
            loss_c.backward()
            optimizer_img.step()
            loss_c.item()
        np.random.shuffle(order)
        for j in order[:2]:  # fetch_net_num 2, model_train_steps 10, trained_bs 256
            net_train, opt, meter_train = nets[j]
            net_train.train()
            for _ in range(10):
                img, lab = get_images(c=None, n=256)
                logits = net_train(img)
                opt.zero_grad()
                criterion(logits, lab).backward()
                opt.step()
                meter_train.add(logits.detach(), lab)

    matcher = DistributionMatching(**IDM, compile_nets=compile_nets)
    learner = plain_learner(matcher, init, real_x, real_y, IPC).to(device)

    def rdd_iteration() -> None:
        matcher.step(learner)
        learner.iteration += 1

    # untimed: queue set-up and the push at iteration 0 (the reference's is not needed when
    # only the compiled rdd side of this pair is kept)
    None if compile_nets else ref_iteration()
    rdd_iteration()
    return timed_sides(device, ref_iteration, rdd_iteration)


def build(items: list[str], args) -> dict:
    """Per item, its sides: ``reference``, ``rdd`` and with ``args.compile`` ``rdd+compile``."""
    torch.manual_seed(0)
    np.random.seed(0)
    makers = {
        "dc_match": lambda flag: gradient_pair(args, False, False, flag),
        "dc_inner": lambda flag: gradient_pair(args, False, True, flag),
        "dsa_match": lambda flag: gradient_pair(args, True, False, flag),
        "dsa_inner": lambda flag: gradient_pair(args, True, True, flag),
        "dm": lambda flag: dm_pair(args, flag),
        "idm": lambda flag: idm_pair(args, flag),
    }
    pairs = {}
    for item in items:
        pairs[item] = makers[item](False)
        if args.compile:
            pairs[item]["rdd+compile"] = makers[item](True)["rdd"]
    return pairs


# -- MTT: GeorgeCazenavette/mtt-distillation distill.py, one subprocess per run ----------------
def mtt_reference(folder: Path, expert: torch.Tensor, images, labels, batch_syn: int, device):
    """distill.py's iteration; ``expert`` (epochs + 1, P) stays on the CPU and the two snapshots
    an iteration uses are moved to ``device`` in it, as distill.py moves its buffer's."""
    reparam = reference_module(folder, "reparam_module")
    utils = reference_module(folder, "utils")
    student_net = reparam.ReparamModule(reference_net(utils, device, dist=False))
    student_net.train()
    num_params = sum(np.prod(p.size()) for p in student_net.parameters())
    image_syn = images.to(device, copy=True).requires_grad_(True)
    labels = labels.to(device)
    syn_lr = torch.tensor(0.001).to(device).requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=100.0, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    dsa_param, criterion = utils.ParamDiffAug(), nn.CrossEntropyLoss().to(device)

    def iteration(syn_steps: int) -> None:
        start_epoch = np.random.randint(0, 2)
        starting_params = expert[start_epoch].to(device)
        target_params = expert[start_epoch + 2].to(device)
        student_params = [starting_params.clone().requires_grad_(True)]
        indices_chunks: list[torch.Tensor] = []
        for _ in range(syn_steps):
            if not indices_chunks:
                indices_chunks = list(torch.split(torch.randperm(len(image_syn)), batch_syn))
            these_indices = indices_chunks.pop()
            x = utils.DiffAugment(image_syn[these_indices], STRATEGY, param=dsa_param)
            x = student_net(x, flat_param=student_params[-1])
            ce_loss = criterion(x, labels[these_indices])
            grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - syn_lr * grad)
        param_loss = F.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
        param_dist = F.mse_loss(starting_params, target_params, reduction="sum") / num_params
        grand_loss = param_loss / param_dist
        optimizer_img.zero_grad()
        optimizer_lr.zero_grad()
        grand_loss.backward()
        optimizer_img.step()
        optimizer_lr.step()
        grand_loss.item()
        del student_params

    return iteration


def minor_faults() -> int:
    """Page faults of this process so far that the kernel served without I/O: a page of
    fresh memory touched for the first time, for one."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def mtt_once(
    side: str,
    folder: Path,
    syn_steps: int,
    batch_syn: int,
    device: torch.device,
    keep_memory: bool = False,
    warmup_steps: int = 1,
) -> dict[str, float]:
    """One warm-up iteration of ``warmup_steps``, then one timed iteration of ``syn_steps``;
    ``keep_memory``: the process keeps freed host memory (rdd.utils.host_memory) first. The
    memory figures are bench_vs_reference.py's (its docstring): host RSS, and on a GPU also
    ``gpu_peak_mib``/``gpu_rise_mib`` from the caching allocator."""
    if keep_memory:
        keep_freed_host_memory()
    torch.manual_seed(0)
    np.random.seed(0)
    real_x, real_y = cifar_shaped(IPC)
    with tempfile.TemporaryDirectory() as tmp:
        trajectories = random_expert(Path(tmp), epochs=4)
        if side == "reference":
            expert = torch.stack([trajectories.snapshot(0, e) for e in range(5)])
            run = mtt_reference(folder, expert, real_x, real_y, batch_syn, device)
        else:
            matcher = TrajectoryMatching(
                syn_steps=1, expert_epochs=2, max_start_epoch=2, batch_syn=batch_syn
            )
            matcher.attach(trajectories)
            learner = plain_learner(matcher, real_x.clone(), real_x, real_y, IPC).to(device)

            def run(steps: int) -> None:
                matcher.syn_steps = steps
                matcher.step(learner)

        run(warmup_steps)
        before, faults = rss_mib(), minor_faults()
        gpu_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        seconds = timed(lambda: run(syn_steps), device)
        faults = minor_faults() - faults
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": seconds, "peak_mib": peak, "rise_mib": peak - before, "faults": faults}
    if device.type == "cuda":
        gpu_peak = torch.cuda.max_memory_allocated(device)
        result |= {
            "gpu_peak_mib": gpu_peak / 2**20,
            "gpu_rise_mib": (gpu_peak - gpu_before) / 2**20,
        }
    return result
