"""Train the fixed feature network of the clustering ablation (``clustering.features=fixed_net``).

    .venv/bin/python benchmarks/subgroup_shift/feature_net.py <cifar10 root> <out.pt> [epochs]

A ConvNet-3 (width 32) trained with plain SGD for a few epochs on the benchmark's training
split (5% of every class inverted, seeded like the runs) and saved in the format
``clustering.feature_net`` reads. It also prints how well k-means in its embedding finds the
inverted images: for every class, the share of inverted images in the cluster that holds most
of them (5% would be no better than chance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from rdd.clustering import KMeansClusterer
from rdd.config.compose import build
from rdd.nets import net_factory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import compose_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("out", type=Path)
    parser.add_argument("epochs", type=int, nargs="?", default=2)
    args = parser.parse_args()
    overrides = ["data=cifar10", f"data.root={args.root}", "data.subgroup=invert"]
    cfg = compose_config(*overrides, "net=convnet_w32", output_dir=args.out.parent / "unused")
    data = build(cfg.data, "data")
    data.setup()
    torch.manual_seed(0)
    net = net_factory(cfg.net, data)()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(data.train_y), generator=generator).split(256):
            loss = F.cross_entropy(net(data.train_x[batch]), data.train_y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    saved = {"config": OmegaConf.to_container(cfg.net), "state_dict": net.state_dict()}
    torch.save(saved | {"num_classes": data.num_classes}, args.out)
    report_purity(args.out, data)


def report_purity(path: Path, data) -> None:
    """For each feature space: how the inverted images fall into every class's k-means
    clusters, fitted and assigned as a run does (pool of 256 per class, seed 0)."""
    from rdd.nets import build_net

    torch.manual_seed(1)  # the untrained net: seeded
    saved = torch.load(path, weights_only=True)
    untrained = build_net(saved["config"], data.channel, data.num_classes, data.im_size).eval()
    spaces = {
        "pixels": ("pixels", None, None),
        "embedding of an untrained net": ("embedding", None, untrained),
        "embedding of the trained net": ("fixed_net", str(path), None),
    }
    for k in (5, 10):
        for name, (features, feature_net, net) in spaces.items():
            clusterer = KMeansClusterer(k=k, features=features, feature_net=feature_net, seed=0)
            pool = clusterer.pool(data.train_y, data.num_classes)
            clusterer.fit(data.train_x[pool], data.train_y[pool], data.num_classes, net)
            groups = clusterer.assign(data.train_x, data.train_y, net, data.num_classes)
            shares, caught = [], []
            for c in range(data.num_classes):
                mine = data.train_y == c
                local = groups[mine] - c * k
                sizes = torch.bincount(local, minlength=k)
                altered = torch.bincount(local[data.train_subgroup[mine]], minlength=k)
                best = int(altered.argmax())
                shares.append(f"{float(altered[best] / sizes[best]):.2f}")
                caught.append(f"{float(altered[best] / altered.sum()):.2f}")
            print(
                f"k={k}, {name}: per class, the cluster holding most inverted images is "
                f"{' '.join(shares)} inverted and holds {' '.join(caught)} of them"
            )


if __name__ == "__main__":
    main()
