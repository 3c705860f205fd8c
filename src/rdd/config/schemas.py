"""Structured-config schemas, registered in Hydra's ConfigStore.

Each `conf/<group>/<option>.yaml` starts from one of these schemas (its defaults list names
`<option>_schema`), so a misspelt key such as `matching.lr_imgg=1` fails when the config is
composed instead of being silently ignored.

One source per value: a schema for a class that the config instantiates (matchers, risks,
clusterers) is *generated* from that class's constructor (`schema_for`): one typed field per
keyword, defaulted as the signature says, and `_target_` naming the class. The YAML files then
list only what differs from those defaults (tests/config/test_config.py fails on a repeated default),
so a default is written once, in the constructor, next to the code that uses it. Nodes that
no constructor takes whole (eval, robust, partition) are hand-written dataclasses here; their
YAML files list nothing they do not change either.

Why not hydra-zen's ``builds(..., populate_full_signature=True)``: it does the same, but our
signatures use only plain types (int, float, str, bool, their optionals), for which the thirty
lines below suffice, and it would be one more dependency for every user.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rdd.eval.corruptions import SEVERITIES, SHIFTS


def schema_for(cls: type, exclude: tuple[str, ...] = (), partial: bool = False) -> type:
    """A dataclass with `_target_` = ``cls`` and one field per keyword of ``cls.__init__``.

    A keyword without a default becomes a mandatory field (``???``: the YAML must set it);
    ``exclude`` names keywords that the code passes at build time (a tensor, a size), which
    are no config keys; ``partial`` adds ``_partial_: true`` (a net option is a factory that
    rdd.nets.build_net completes with the data's shape). The class is made once and lives in
    this module under its name, so that a config typed by it pickles (DDP's spawned
    processes receive the config).
    """
    return _made_schema(cls, tuple(exclude), bool(partial))  # one class per arguments


@functools.cache
def _made_schema(cls: type, exclude: tuple[str, ...], partial: bool) -> type:
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, field(default=f"{cls.__module__}.{cls.__qualname__}"))
    ]
    if partial:
        fields.append(("_partial_", bool, field(default=True)))
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.name in exclude or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        fields.append((param.name, config_type(hints[param.name]), _field_default(param.default)))
    name = f"{cls.__name__}{'Partial' if partial else ''}Schema"  # one name per class made
    schema = dataclasses.make_dataclass(name, fields)
    schema.__module__ = __name__  # make_dataclass's own `module=` needs Python 3.12
    globals()[schema.__name__] = schema
    return schema


def config_type(hint: Any) -> Any:
    """The annotation as OmegaConf can type a field: plain types, their optionals and lists
    stay (so `data.val_fraction=half` fails at compose time); a union of several types or a
    mapping becomes Any (e.g. ``image_size: int | Sequence[int] | None``)."""
    if hint in (int, float, str, bool):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        inner = config_type(others[0]) if len(others) == 1 else Any
        return Any if inner is Any else typing.Optional[inner]  # noqa: UP045 (a runtime type)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        inner = config_type(args[0])
        return list[inner] if inner in (int, float, str, bool) else Any
    return Any


def _field_default(default: Any) -> Any:
    if default is inspect.Parameter.empty:
        return field(default=MISSING)
    if isinstance(default, tuple):  # a config holds lists
        default = list(default)
    if isinstance(default, (list, dict)):  # a dataclass field may not share a mutable default
        return field(default_factory=lambda: copy.deepcopy(default))
    return field(default=default)


def signature_defaults(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword -> default of ``cls.__init__`` (mandatory keywords left out)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {
        p.name: p.default
        for p in params
        if p.name not in exclude and p.default is not inspect.Parameter.empty
    }


# A net's shape comes from the data when it is built (rdd.nets.build_net).
NET_SHAPE = ("channel", "num_classes", "im_size")

# -- schemas generated from constructors: (group, schema name) -> (class path, build-time keywords)
GENERATED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("net", "convnet_schema"): ("rdd.nets.convnet.ConvNet", NET_SHAPE),
    ("net", "mlp_schema"): ("rdd.nets.mlp.MLP", NET_SHAPE),
    ("net", "vgg11_schema"): ("rdd.nets.vgg.VGG11", NET_SHAPE),
    ("net", "alexnet_schema"): ("rdd.nets.alexnet.AlexNet", NET_SHAPE),
    ("net", "resnet18_schema"): ("rdd.nets.resnet.ResNet18", NET_SHAPE),
    ("net", "resnetap10_schema"): ("rdd.nets.resnet.ResNetAP10", NET_SHAPE),
    ("data", "data_schema"): ("rdd.data.datamodule.RealDataModule", ()),
    ("matching", "gradient_schema"): ("rdd.matching.gradient.GradientMatching", ()),
    ("matching", "distribution_schema"): ("rdd.matching.distribution.DistributionMatching", ()),
    ("matching", "trajectory_schema"): ("rdd.matching.trajectory.TrajectoryMatching", ()),
    ("matching", "random_schema"): ("rdd.matching.coreset.RandomCoreset", ()),
    ("matching", "herding_schema"): ("rdd.matching.coreset.HerdingCoreset", ()),
    ("matching", "kcenter_schema"): ("rdd.matching.coreset.KCenterCoreset", ()),
    ("matching", "full_schema"): ("rdd.matching.coreset.FullDataset", ()),
    ("risk", "mean_schema"): ("rdd.risk.mean.MeanRisk", ()),
    ("risk", "cvar_schema"): ("rdd.risk.cvar.CVaR", ()),
    ("risk", "entropic_schema"): ("rdd.risk.entropic.Entropic", ()),
    ("risk", "max_group_schema"): ("rdd.risk.max_group.MaxGroup", ()),
    ("risk", "two_level_schema"): ("rdd.risk.two_level.TwoLevel", ()),
    ("clustering", "faiss_kmeans_schema"): ("rdd.clustering.kmeans_clusterer.KMeansClusterer", ()),
    ("clustering", "nearest_synthetic_schema"): (
        "rdd.clustering.nearest.NearestSyntheticClusterer",
        (),
    ),
    # The membership mask comes from the data module when the run builds it (rdd.robust.plan).
    ("clustering", "known_schema"): ("rdd.clustering.known.KnownSubgroups", ("membership",)),
}


def target_class(path: str) -> type:
    """The class a dotted path names (``rdd.risk.cvar.CVaR``)."""
    import importlib

    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


# -- nodes no constructor takes whole: written here once ------------------------------------
@dataclass
class AllocationSchema:
    """robust.allocation: how many synthetic images each subgroup owns (rdd.robust.allocation).

    every: Iterations between re-allocations (a network trained on the current set measures
        every group's loss; images moved to another group restart from it), after the one at
        iteration 0 (right after the first allocation, from the groups' sizes). None: at
        iteration 0 only. A revisit costs one short training (~20 s for CIFAR-10 on a CPU).
    shared: Images no subgroup needs stay shared: matched against the whole class, as the
        base method matches them; a group owns images only where the risk says the shared
        ones do not serve it (the mean keeps every image shared). false: every image is owned
        by a group (the design measured before; use it with min_images >= 1).
    min_images: Images every subgroup of a class owns at least (ipc must be >= this x groups
        per class).
    represent: The shared images start with every group that may own images represented:
        the images the first, size-based allocation gives such a group start from its real
        images and keep them when the first measurement gives them back to the shared pool
        (IDM on grayscale, benchmarks/subgroup_shift section 7: +2.11 worst group against
        +1.19 without). false: they take back the base method's start, so a run whose groups
        end up owning nothing is the base method bit for bit.
    represent_step: The step size of those represented images, as a share of every other
        image's (in [0, 1]): 1 matches them as any shared image; below 1 they stay nearer
        their group's real start (0: they stay real images of their group). Matching against
        the whole class pulls a represented image towards the majority's style (DM's 100
        steps colour every grey start, IDM's 10 small ones keep them grey), yet kept grey (0)
        they did not lift DM's or DSA's grayscale worst group: benchmarks/subgroup_shift
        section 9.
    start_share: The images a group owns or represents start from real images drawn from
        the share of its members that lie deepest inside it (k-means: the margin of
        rdd.clustering.kmeans_clusterer.group_margins, the distance to the nearest other
        group's centroid minus that to its own), so a start is a typical member, not one on
        the boundary with the majority. 1: any member (groups without centroids, such as
        clustering=known, always draw from all).
    rare_below: A group may own or represent images only while the shared images give it
        less than this many images' worth (its mass times ipc): 1, a group under 10 % of
        its class at IPC 10. Above 1 a somewhat larger candidate group (a rare cluster that
        k-means mixed with some majority images) is covered too (benchmarks/subgroup_shift
        section 18).
    exponent: The loss model's power law, loss_g(n) = L_g ((c_g + 1) / (n + 1))^exponent.
    train_steps: Full-batch SGD steps of the network that measures the groups' losses.
    eval_per_group: Real images per group on which that network's cross-entropy is measured.
    """

    every: int | None = 500
    shared: bool = True
    min_images: int = 0
    represent: bool = True
    represent_step: float = 1.0
    start_share: float = 1.0
    rare_below: float = 1.0
    exponent: float = 0.5
    train_steps: int = 100
    eval_per_group: int = 256


@dataclass
class RobustSchema:
    """conf/robust: where the risk acts and what DC/DSA's networks train on (rdd.robust.plan).

    targets: Where the risk acts: [matching], [networks] or [matching, networks]. None:
        matching, plus networks wherever a network trains on real data at this setting (IDM's
        queue, MTT's experts, DC/DSA with net_train_data=real and an inner loop).
    net_train_data: What DC/DSA's sampled network trains on between matching steps:
        synthetic (the published method) | real (the robust paper's networks path; with
        networks in `targets` it minimises the group risk) | mixed. The other methods fix it
        themselves (IDM, MTT: real; DM: no network training).
    min_per_group: Stratified real draws: every subgroup contributes at least this many images
        to a real batch (all of a smaller group, with a warning), so per-group statistics are
        not noise (rdd.distill.realpool).
    allocation: How subgroups own synthetic images when the risk acts on matching.
    """

    targets: list[str] | None = None
    net_train_data: str = "synthetic"
    min_per_group: int = 64
    allocation: AllocationSchema = field(default_factory=AllocationSchema)


@dataclass
class PartitionSchema:
    """Subgroups of the test set for mean/worst-cluster accuracy (cached, same for every run)."""

    k: int = 10
    seed: int = 0
    features: str = "pixels"  # pixels | net: the embedding of a fixed (seeded, untrained) `net`
    net: str = "convnet"  # conf/net name of the feature network when features=net


@dataclass
class EvalSchema:
    """The evaluation protocol (conf/eval): typed, so `eval.epochs=ten` fails at compose time."""

    nets: list[str] | None = None  # conf/net names, e.g. [convnet, resnet18]; null: the run's net
    num_nets: int = 5
    epochs: int = 1000
    lr: float = 0.01
    lr_from_synset: bool = True  # a set with a learned step size (MTT) is evaluated with it
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 256
    lr_decay_at: float = 0.5  # lr x 0.1 after this fraction of the epochs
    dsa: bool = True
    dsa_strategy: str | None = None  # null: the dataset's DSA strategy (data.dsa_strategy)
    partition: PartitionSchema = field(default_factory=PartitionSchema)
    # The shifted test sets (rdd.eval.corruptions). By default the three fixed shifts, each
    # one more pass over the test set; the 45 corrupted sets (15 corruptions x 5 severities)
    # are the explicit preset eval=robustness, as they multiply the scoring time by ~12.
    shifts: list[str] = field(default_factory=lambda: list(SHIFTS))
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    shift_seed: int = 0
    # a CIFAR-10-C / CIFAR-100-C folder (labels.npy, <corruption>.npy): score the published
    # corrupted images instead of regenerating them (rdd.eval.official_corruptions)
    corruptions_root: str | None = None
    # Train the num_nets networks of an architecture together (stacked parameters under
    # torch.func.vmap, rdd.eval.stacked): same seeds, batches and DSA draws as one by one, equal
    # to float rounding. null: stacked on a GPU, one by one on the CPU (where stacking measured
    # slower, 0.6-0.85x: benchmarks/README.md); true: stacked anywhere; false: one by one. Mixed
    # precision and networks vmap cannot run always train one by one (with a warning).
    batched_nets: bool | None = None
    # Train the networks in parallel, one per device, each in a worker process
    # (rdd.eval.parallel): N GPUs under a GPU accelerator, else N CPU processes sharing the
    # cores; -1: every visible GPU. Same weights and figures as one by one (same seeds).
    devices: int = 1


@dataclass
class ClusteringNoneSchema:
    """clustering=none: no groups (nothing is built)."""

    name: str = "none"


def register_schemas() -> None:
    """Store every schema under its group (idempotent)."""
    store = ConfigStore.instance()
    for (group, name), (path, exclude) in GENERATED.items():
        schema = schema_for(target_class(path), exclude, partial=group == "net")
        store.store(group=group, name=name, node=schema)
    store.store(group="eval", name="eval_schema", node=EvalSchema)
    store.store(group="robust", name="robust_schema", node=RobustSchema)
    store.store(group="clustering", name="none_schema", node=ClusteringNoneSchema)


register_schemas()
