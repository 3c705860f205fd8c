"""The robust layer end to end: fresh real batches, where the risk acts, per-slot risk state."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from rdd.clustering import KMeansClusterer, KnownSubgroups, NearestSyntheticClusterer
from rdd.config.errors import UserError
from rdd.distill.learner import SyntheticSetLearner
from rdd.distill.realpool import RealPool
from rdd.matching.distribution import DistributionMatching
from rdd.matching.gradient import GradientMatching
from rdd.nets import build_net
from rdd.risk import CVaR, MaxGroup, cvar_weights
from rdd.risk.mean import MeanRisk
from rdd.robust.ownership import SHARED, AllocationSettings, Ownership
from rdd.robust.plan import RiskSlots, RobustPlan, RunningGroupRisk, build_risk, plan_for
from tests.conftest import compose_config

K, PER_CLASS, SIZE = 3, 40, 8
NET = {"_target_": "rdd.nets.convnet.ConvNet", "width": 4, "depth": 2}


def real_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(K * PER_CLASS, 1, SIZE, SIZE, generator=gen)
    x[::7] *= 3  # a few far-off images per class: a subgroup k-means can find
    return x, torch.arange(K).repeat_interleave(PER_CLASS)


OWNED_ONLY = AllocationSettings(min_per_group=8, train_steps=5, shared=False, min_images=1)


def learner_for(
    risk, clusterer, plan, matcher=None, batch_real=30, allocation=None
) -> SyntheticSetLearner:
    x, y = real_data()
    matcher = matcher or DistributionMatching(iterations=4, batch_real=batch_real, dsa=False)
    init = torch.cat([x[y == c][:2] for c in range(K)])
    make_net = partial(build_net, NET, 1, K, (SIZE, SIZE))
    return SyntheticSetLearner(
        matcher,
        make_net,
        init,
        x,
        y,
        K,
        2,
        seed=0,
        risk=risk,
        clusterer=clusterer,
        plan=plan,
        allocation=allocation or AllocationSettings(min_per_group=8, train_steps=5),
    )


def fit(learner: SyntheticSetLearner) -> list[torch.Tensor]:
    """Run the learner; returns every per-class real draw (indices) it made."""
    draws: list[torch.Tensor] = []
    draw = learner.pool.draw

    def recording(c, n, generator):
        idx = draw(c, n, generator)
        draws.append(idx)
        return idx

    learner.pool.draw = recording
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(learner)
    return draws


def kmeans(pool_per_class: int = 8, every: int = 2) -> KMeansClusterer:
    return KMeansClusterer(
        k=2, every=every, pool_per_class=pool_per_class, features="pixels", seed=0
    )


def test_a_robust_run_draws_fresh_stratified_batches_from_every_image() -> None:
    """The clustering is fitted on 8 images per class, but a robust run's batches come from
    all 40, group by group: every group's share of the batch, at least min_per_group."""
    learner = learner_for(CVaR(0.5), kmeans(), RobustPlan(matching=True))
    draws: list[list[torch.Tensor]] = []
    stratified = learner.pool.draw_stratified

    pool = learner.pool

    def recording(c, n, minimum, generator):
        drawn = stratified(c, n, minimum, generator)
        assert n == 30 and minimum == 8
        assert [len(d) for d in drawn] == pool.stratified_sizes(c, n, minimum)
        for group, idx in zip(pool.class_groups(c).tolist(), drawn, strict=True):
            assert bool((pool.groups[idx] == group).all()) and len(idx.unique()) == len(idx)
        draws.append(drawn)
        return drawn

    pool.draw_stratified = recording
    fit(learner)
    _, y = real_data()
    assert len(draws) == 4 * K  # every class, every iteration
    seen = torch.unique(torch.cat([torch.cat(d) for d in draws]))
    assert int(torch.bincount(y[seen], minlength=K).min()) > 8


def test_the_stratified_draw_gives_every_group_its_minimum() -> None:
    """A class of 40 images in groups of 35 and 5: a batch of 30 in proportion would hold
    ~4 of the small group; with a minimum of 8 it holds all 5, and the large group its share."""
    _, y = real_data()
    pool = RealPool(y, K)
    groups = 2 * y
    groups[::8] += 1  # 5 of every class's 40 images
    pool.set_groups(groups, 2)
    assert pool.stratified_sizes(0, 30, 8) == [26, 5]
    assert pool.stratified_sizes(0, 30, 1) == [26, 4]
    assert pool.stratified_sizes(0, 100, 1) == [35, 5]  # never more than a group holds
    drawn = pool.draw_stratified(0, 30, 8, torch.Generator().manual_seed(0))
    assert [len(d) for d in drawn] == [26, 5]


def test_every_image_gets_a_group_of_its_own_class_after_a_fit() -> None:
    learner = learner_for(CVaR(0.5), kmeans(), RobustPlan(matching=True))
    fit(learner)
    _, y = real_data()
    groups = learner.pool.groups
    assert learner.num_groups == 2 * K and len(groups) == len(y)
    assert torch.equal(groups // 2, y)  # group id = class * k + cluster


def test_nearest_synthetic_groups_every_image_around_its_class_images() -> None:
    clusterer = NearestSyntheticClusterer(every=2, pool_per_class=8, features="pixels")
    learner = learner_for(CVaR(0.5), clusterer, RobustPlan(matching=True))
    fit(learner)
    _, y = real_data()
    assert learner.num_groups == 2 * K  # one group per synthetic image (ipc 2)
    assert torch.equal(learner.pool.groups // 2, y)


def test_known_subgroups_make_the_mask_the_groups_once() -> None:
    x, y = real_data()
    altered = torch.zeros(len(y), dtype=torch.bool)
    altered[::7] = True  # the far-off images of real_data()
    learner = learner_for(CVaR(0.5), KnownSubgroups(altered), RobustPlan(matching=True))
    fit(learner)
    assert learner.num_groups == 2 * K
    # Group 2c: class c's common images, 2c + 1: its altered ones; nothing else.
    assert torch.equal(learner.pool.groups, 2 * y + altered.long())
    # Fixed groups: built at iteration 0 only, so a refit never resets group DRO's state.
    assert [KnownSubgroups(altered).due(i) for i in range(3)] == [True, False, False]


def test_known_subgroups_need_the_mask_and_assign_only_its_images() -> None:
    with pytest.raises(UserError, match="data.subgroup"):
        KnownSubgroups(None)
    x, y = real_data()
    with pytest.raises(ValueError, match="training images its mask describes"):
        KnownSubgroups(torch.zeros(len(y) + 1, dtype=torch.bool)).assign(x, y)


def test_every_synthetic_image_belongs_to_one_group_of_its_class() -> None:
    learner = learner_for(CVaR(0.5), kmeans(), RobustPlan(matching=True), allocation=OWNED_ONLY)
    fit(learner)
    owners = learner.ownership.owners
    assert torch.equal(owners // 2, learner.labels.cpu())  # a group of the image's own class
    for c in range(K):  # ipc 2, k 2, at least one image each: one image per group
        assert sorted(owners[learner.labels.cpu() == c].tolist()) == [2 * c, 2 * c + 1]


def test_with_shared_images_every_image_is_shared_or_owned_by_a_group_of_its_class() -> None:
    """Max-group favours one group per class: it buys images, the rest stay shared."""
    learner = learner_for(MaxGroup(), kmeans(), RobustPlan(matching=True))
    fit(learner)
    owners, labels = learner.ownership.owners, learner.labels.cpu()
    owned = owners != SHARED
    assert bool(owned.any()) and bool((~owned).any())
    assert torch.equal(owners[owned] // 2, labels[owned])
    assert learner.ownership.shared_rows(0).tolist() == torch.nonzero(~owned[:2]).flatten().tolist()


@pytest.mark.parametrize("allocation", [None, OWNED_ONLY], ids=["shared", "owned_only"])
def test_an_owned_image_starts_from_a_real_image_of_its_group(allocation) -> None:
    learner = learner_for(MaxGroup(), kmeans(), RobustPlan(matching=True), allocation=allocation)
    before = learner.images.detach().clone()
    learner.regroup(learner.new_net())  # iteration 0: fit, allocate, measure
    x, _ = real_data()
    owners = learner.ownership.owners.tolist()
    assert any(group >= 0 for group in owners)
    for row, group in enumerate(owners):
        if group == SHARED:  # a shared image keeps the base method's start
            assert torch.equal(learner.images[row].detach(), before[row])
            continue
        members = x[learner.pool.groups == group]
        assert any(torch.equal(learner.images[row].detach(), m) for m in members)
    assert "alloc/moved" not in learner.regroup(learner.new_net())  # once per iteration


def test_shared_images_are_matched_against_a_plain_batch_of_their_class() -> None:
    """The shared rows' real batch is the base method's draw (the whole class, batch_real
    images); each owning group's batch comes from its own images."""
    learner = learner_for(MaxGroup(), kmeans(), RobustPlan(matching=True))
    learner.regroup(learner.new_net())
    x, y = real_data()
    for c in range(K):
        batches = learner.owned_batches(c, 30)
        shared = learner.ownership.shared_rows(c)
        rows, real = batches[0]
        assert rows.tolist() == shared.tolist() and len(real) == 30
        in_class = x[y == c]
        assert all(any(torch.equal(r, m) for m in in_class) for r in real)
        for rows, real in batches[1:]:
            (group,) = learner.ownership.owners[rows.cpu()].unique().tolist()
            members = x[learner.pool.groups == group]
            assert all(any(torch.equal(r, m) for m in members) for r in real)


@pytest.mark.parametrize("allocation", [None, OWNED_ONLY], ids=["shared", "owned_only"])
def test_the_first_measurement_sees_the_set_the_size_allocation_made(
    monkeypatch, allocation
) -> None:
    """The loss model is anchored at the counts of the size-based allocation, so the network
    that measures the groups' losses at iteration 0 trains on those owned images (each a real
    image of its group), not on the base method's random start."""
    import rdd.robust.ownership

    seen = []
    measure = rdd.robust.ownership.train_on_set
    monkeypatch.setattr(
        rdd.robust.ownership,
        "train_on_set",
        lambda net, images, *rest: (
            seen.append(images.detach().clone()) or measure(net, images, *rest)
        ),
    )
    learner = learner_for(MaxGroup(), kmeans(), RobustPlan(matching=True), allocation=allocation)
    start = learner.images.detach().clone()
    learner.regroup(learner.new_net())
    x, _ = real_data()
    (trained_on,) = seen
    for row, group in enumerate(learner.ownership.owners.tolist()):
        if group == SHARED:
            assert torch.equal(trained_on[row], start[row])
            continue
        members = x[learner.pool.groups == group]
        assert any(torch.equal(trained_on[row], m) for m in members)


def test_a_moved_slot_changes_owner_and_the_others_keep_theirs() -> None:
    own = Ownership(2, 4, AllocationSettings())
    own.assign(0, torch.tensor([0, 1]), torch.tensor([3, 1]))
    own.assign(1, torch.tensor([2, 3]), torch.tensor([2, 2]))
    assert own.owners.tolist() == [0, 0, 0, 1, 2, 2, 3, 3]
    changed = own.assign(0, torch.tensor([0, 1]), torch.tensor([2, 2]))
    assert changed.tolist() == [2]  # group 0 gives up its last image to group 1
    assert own.owners.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert own.counts(torch.tensor([0, 1])).tolist() == [2, 2]


def test_group_dro_on_matching_and_networks_at_once_runs() -> None:
    """Was: "first called with 3 groups, now with 30" (one q for both targets)."""
    matcher = GradientMatching(
        iterations=1, batch_real=10, batch_train=12, outer_loop=2, inner_loop=2
    )
    matcher.net_train_data = "real"
    plan = RobustPlan(matching=True, networks=True)
    learner = learner_for(MaxGroup(smooth=True), kmeans(), plan, matcher=matcher)
    fit(learner)
    slots = learner.risks.slots
    assert "networks" in slots  # matching: the risk allocates images (rdd.robust.ownership)
    assert slots["networks"].risk.q.numel() == 2 * K


@pytest.mark.parametrize("features, kept", [("pixels", True), ("embedding", False)])
def test_a_refit_keeps_the_risk_state_only_where_group_ids_persist(features, kept) -> None:
    """Refits in a fixed space are matched to the previous fit, so group DRO's q is carried
    over; with ``embedding`` the ids name other subgroups after a refit and q restarts."""
    clusterer = KMeansClusterer(k=2, every=1, pool_per_class=8, features=features, seed=0)
    plan = RobustPlan(matching=False, networks=True)
    learner = learner_for(MaxGroup(smooth=True), clusterer, plan)
    learner.regroup(learner.new_net())
    q = learner.risk_for("networks")
    q(torch.arange(2.0 * K), torch.ones(2 * K))
    learner.iteration = 1  # due again (every=1)
    learner.regroup(learner.new_net())
    assert ("networks" in learner.risks.slots) is kept
    if kept:
        assert learner.risk_for("networks") is q


def test_running_group_risk_weighs_by_the_running_estimate() -> None:
    sums_a, counts_a = torch.tensor([4.0, 1.0, 0.0]), torch.tensor([2.0, 1.0, 0.0])
    sums_b, counts_b = torch.tensor([0.0, 6.0, 9.0]), torch.tensor([0.0, 2.0, 3.0])
    running = RunningGroupRisk(CVaR(0.5), 3, momentum=0.25)
    # The first batch alone: the plain risk of it.
    assert float(running(sums_a, counts_a)) == pytest.approx(float(CVaR(0.5)(sums_a, counts_a)))
    value = running(sums_b, counts_b)
    ema_sums = 0.75 * sums_a.double() + 0.25 * sums_b.double()
    ema_counts = 0.75 * counts_a.double() + 0.25 * counts_b.double()
    w = cvar_weights(ema_sums / ema_counts.clamp_min(1e-12), ema_counts / ema_counts.sum(), 0.5)
    w = w.float() * (counts_b > 0)
    means_b = torch.tensor([0.0, 3.0, 3.0])
    assert float(value) == pytest.approx(float((w / w.sum() * means_b).sum()))


def test_risk_slots_checkpoint_round_trip() -> None:
    slots = RiskSlots(MaxGroup(smooth=True))
    slots.get("matching", 1)(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))
    slots.get("networks", None, 4)(torch.tensor([1.0, 2.0, 0.0, 5.0]), torch.ones(4))
    again = RiskSlots(MaxGroup(smooth=True))
    again.load_state(slots.state())
    for key, module in slots.slots.items():
        for name, value in module.state_dict().items():
            torch.testing.assert_close(again.slots[key].state_dict()[name], value)


# -- the defaults mean what they say --------------------------------------------------------------
def test_cvar_at_the_defaults_differs_from_the_mean_and_from_max_group(tmp_path) -> None:
    """Default k-means subgroups of every digits class, default alpha: the CVaR tail is wider
    than the largest group (so it is not max_group) and alpha > 0 (so it is not the mean)."""
    from rdd.config.compose import build

    cfg = compose_config("risk=cvar", "clustering.features=pixels", output_dir=tmp_path)
    data = build(cfg.data, "data")
    data.setup()
    clusterer = build(cfg.clustering, "clustering")
    risk = build_risk(cfg.risk)
    pool = clusterer.pool(data.train_y, data.num_classes)
    groups = clusterer.fit(data.train_x[pool], data.train_y[pool], data.num_classes)
    k = clusterer.k
    gen = torch.Generator().manual_seed(0)
    for c in range(data.num_classes):
        counts = torch.bincount(groups[groups // k == c] - c * k, minlength=k).double()
        masses = counts / counts.sum()
        assert float(masses.max()) < 1 - risk.alpha  # the tail holds more than the worst group
        means = torch.rand(k, generator=gen, dtype=torch.float64)
        w = risk.group_weights(means * counts, counts)
        assert float(w.max()) < 1.0  # not max_group
        assert not torch.allclose(w, masses)  # not the mean


# -- where the risk acts: one decision, checked up front --------------------------------------------
def plan_of(*overrides: str, tmp_path, ipc: int = 10) -> RobustPlan:
    from rdd.config.compose import build

    cfg = compose_config(*overrides, f"ipc={ipc}", output_dir=tmp_path)
    matcher = build(cfg.matching, "matching")
    return plan_for(cfg, matcher, ipc, torch.full((10,), 100))


@pytest.mark.parametrize(
    ("overrides", "ipc", "expected"),
    [
        (("matching=dm", "risk=cvar"), 10, RobustPlan(matching=True)),
        (("matching=idm", "risk=cvar"), 10, RobustPlan(matching=True, networks=True)),
        (("matching=dsa", "risk=cvar"), 10, RobustPlan(matching=True)),
        (("matching=dsa", "risk=cvar", "robust.net_train_data=real"), 10, RobustPlan(True, True)),
        # IPC 1: one outer step, the network never trains: the default leaves networks out.
        (
            (
                "matching=dsa",
                "risk=cvar",
                "robust.net_train_data=real",
                "robust.allocation.min_images=0",
            ),
            1,
            RobustPlan(True),
        ),
        (("matching=dm", "risk=none"), 10, RobustPlan()),
    ],
)
def test_the_default_targets_agree_with_what_the_method_trains(
    overrides, ipc, expected, tmp_path
) -> None:
    assert plan_of(*overrides, tmp_path=tmp_path, ipc=ipc) == expected


@pytest.mark.parametrize(
    ("overrides", "ipc", "message"),
    [
        (("matching=dm", "risk=cvar", "robust.targets=[networks]"), 10, "DM trains no network"),
        (
            ("matching=dsa", "risk=cvar", "robust.targets=[networks,matching]"),
            10,
            "net_train_data=real",
        ),
        (("matching=dm", "risk=cvar", "robust.targets=[]"), 10, "non-empty subset"),
        (("matching=dm", "risk=cvar", "clustering.k=1"), 10, "fewer than 2 subgroups"),
        (("matching=dm", "risk=cvar", "clustering=nearest_synthetic"), 1, "fewer than 2 subgroups"),
        (("matching=dm", "risk=cvar", "clustering=none"), 10, "needs subgroups"),
        (
            ("matching=dm", "risk=cvar", "clustering.k=200", "robust.allocation.min_images=0"),
            10,
            "larger than the smallest",
        ),
    ],
)
def test_a_robust_setting_that_would_do_nothing_is_refused(
    overrides, ipc, message, tmp_path
) -> None:
    with pytest.raises(UserError, match=message):
        plan_of(*overrides, tmp_path=tmp_path, ipc=ipc)


@pytest.mark.parametrize(
    ("shape", "refused"), [("clusters", True), ("rare_vs_rest", False), ("auto", False)]
)
def test_the_ipc_check_counts_the_groups_of_the_shape(shape, refused, tmp_path) -> None:
    """Five clusters need five images at min_images=1; two merged groups need two, and auto
    (two or five, decided at the first fit) is checked again when the images are allocated."""
    overrides = ("matching=dm", "risk=cvar", "robust.allocation.min_images=1")
    overrides += (f"clustering.shape={shape}",)
    if refused:
        with pytest.raises(UserError, match="each of the 5 subgroups per class"):
            plan_of(*overrides, tmp_path=tmp_path, ipc=3)
    else:
        assert plan_of(*overrides, tmp_path=tmp_path, ipc=3).matching


def test_a_run_whose_groups_auto_merged_fits_an_ipc_below_k(tmp_path) -> None:
    """apart=-2: auto always merges, so two groups own an image each of ipc 3 (refused before
    the first fit was counted)."""
    from rdd.run import run
    from rdd.synset import SyntheticSet
    from tests.conftest import TINY

    overrides = ("risk=cvar", "ipc=3", "robust.allocation.min_images=1", "clustering.apart=-2")
    run(compose_config(*TINY, *overrides, output_dir=tmp_path))
    synset = SyntheticSet.load(tmp_path / "synset.pt")
    assert torch.bincount(synset.labels).tolist() == [3] * 10


def test_the_allocation_refuses_more_groups_than_the_ipc_can_serve() -> None:
    """What auto found: two groups of five present fit ipc 3 at one image each, five do not."""
    from rdd.robust.ownership import allocate_class

    settings = AllocationSettings(min_images=1)
    merged = allocate_class(CVaR(alpha=0.5), torch.tensor([0, 190, 0, 10, 0]), 3, settings)
    assert merged.sum() == 3 and (merged[[1, 3]] >= 1).all() and merged[[0, 2, 4]].sum() == 0
    with pytest.raises(UserError, match="5 subgroups the clustering found"):
        allocate_class(CVaR(alpha=0.5), torch.tensor([40, 40, 40, 40, 40]), 3, settings)


def test_the_allocation_is_revisited_at_its_cadence(monkeypatch) -> None:
    import rdd.robust.ownership as ownership

    revisits = []
    measured = ownership.measured_allocation

    def recording(learner):
        revisits.append(learner.iteration)
        return measured(learner)

    monkeypatch.setattr(ownership, "measured_allocation", recording)
    learner = learner_for(CVaR(0.5), kmeans(every=10), RobustPlan(matching=True))
    learner.ownership.settings = AllocationSettings(min_per_group=8, every=2, train_steps=5)
    learner.matcher.iterations = 5
    fit(learner)
    assert revisits == [0, 2, 4]


def test_a_slot_moved_to_another_group_restarts_from_that_group() -> None:
    from rdd.robust.ownership import restart_rows

    learner = learner_for(
        CVaR(0.5), KnownSubgroups(far_off()), RobustPlan(matching=True), allocation=OWNED_ONLY
    )
    learner.regroup(learner.new_net())
    own = learner.ownership
    row = int(own.rows_of(0)[0])  # class 0's common group gives its image to the rare group
    changed = own.assign(0, torch.tensor([0, 1]), torch.tensor([0, 2]))
    assert changed.tolist() == [row]
    restart_rows(learner, changed)
    x, _ = real_data()
    rare = x[learner.pool.groups == 1]
    assert any(torch.equal(learner.images[row].detach(), m) for m in rare)


def far_off() -> torch.Tensor:
    """The far-off images of real_data() as a known subgroup."""
    _, y = real_data()
    altered = torch.zeros(len(y), dtype=torch.bool)
    altered[::7] = True
    return altered


def test_an_image_given_back_to_the_shared_pool_keeps_its_pixels(monkeypatch) -> None:
    """A revisit that returns an owned image to the shared pool leaves it as it is (it is an
    image of the class already); the image optimizer's state is not touched either."""
    import rdd.robust.ownership as ownership

    learner = learner_for(MaxGroup(), kmeans(every=100), RobustPlan(matching=True))
    learner.regroup(learner.new_net())  # iteration 0: allocate, measure
    own = learner.ownership
    row = int(torch.nonzero(own.owners >= 0).flatten()[0])
    c, group = row // 2, int(own.owners[row])
    groups = learner.pool.class_groups(c)

    def give_back(_learner):
        slots = own.slots(c, groups)
        slots[groups.tolist().index(group)] -= 1
        slots[-1] += 1
        return own.assign(c, ownership.owner_ids(groups, own.settings), slots)

    monkeypatch.setattr(ownership, "measured_allocation", give_back)
    own.settings = AllocationSettings(min_per_group=8, every=2, train_steps=5)
    learner.iteration = 2
    before = learner.images.detach().clone()
    stats = ownership.revisit_allocation(learner)
    assert stats["alloc/moved"] == 1.0 and int(own.owners[row]) == SHARED
    assert torch.equal(learner.images.detach(), before)


@pytest.mark.parametrize(
    "matcher",
    [
        lambda: DistributionMatching(iterations=4, batch_real=30, dsa=True),
        lambda: GradientMatching(iterations=2, outer_loop=2, inner_loop=1, batch_real=30, dsa=True),
    ],
    ids=["dm", "dsa"],
)
def test_a_robust_run_whose_groups_own_no_image_is_the_base_method_bitwise(matcher) -> None:
    """The mean keeps every image shared: the robust layer then clusters, measures and draws
    its stratified batches from its own random stream, and the set is the base method's."""
    base = learner_for(None, None, RobustPlan(), matcher=matcher())
    robust = learner_for(MeanRisk(), kmeans(), RobustPlan(matching=True), matcher=matcher())
    start = base.images.detach().clone()
    fit(base)
    fit(robust)
    assert bool((robust.ownership.owners == SHARED).all())
    assert robust.iteration == base.iteration and robust.iteration > 0
    assert torch.equal(robust.images.detach(), base.images.detach())
    assert not torch.equal(base.images.detach(), start)  # the images were learned
    assert torch.equal(robust.generator.get_state(), base.generator.get_state())


def probe_given_back(monkeypatch) -> dict[int, int]:
    """Make the measurement at iteration 0 give every image back to the shared pool; returns
    the size-based probe's owners ({row: group}), filled in when the measurement runs."""
    import rdd.robust.ownership as ownership

    allocate, measure, probe = ownership.allocate_class, ownership.measured_allocation, {}

    def nothing_owned_once_measured(risk, sizes, ipc, settings, measured=None, anchors=None):
        counts = allocate(risk, sizes, ipc, settings, measured, anchors)
        if measured is None:
            return counts
        return torch.cat([torch.zeros(len(counts) - 1, dtype=torch.int64), torch.tensor([ipc])])

    def owners_before_measuring(learner):
        owners = learner.ownership.owners
        probe.update(
            (row, int(owners[row])) for row in torch.nonzero(owners >= 0).flatten().tolist()
        )
        return measure(learner)

    monkeypatch.setattr(ownership, "allocate_class", nothing_owned_once_measured)
    monkeypatch.setattr(ownership, "measured_allocation", owners_before_measuring)
    return probe


def test_images_the_first_measurement_gives_back_take_back_the_base_start(monkeypatch) -> None:
    """The size-based allocation buys the rare group images, which restart from its real
    images for the measurement at iteration 0; without ``represent``, if the measured
    allocation gives every image back to the shared pool, the run is the base method bit
    for bit."""
    import rdd.robust.ownership as ownership

    restarted, restart = [], ownership.restart_rows

    def recording(learner, rows):
        restarted.append(rows)
        restart(learner, rows)

    probe_given_back(monkeypatch)
    monkeypatch.setattr(ownership, "restart_rows", recording)
    known = KnownSubgroups(far_off())
    base = learner_for(None, None, RobustPlan())
    settings = AllocationSettings(min_per_group=8, train_steps=5, represent=False)
    robust = learner_for(MaxGroup(), known, RobustPlan(matching=True), allocation=settings)
    fit(base)
    fit(robust)
    assert len(restarted) and len(torch.cat(restarted))  # the probe owned some images
    assert bool((robust.ownership.owners == SHARED).all())
    assert torch.equal(robust.images.detach(), base.images.detach())


def test_with_represent_the_images_the_first_measurement_gives_back_keep_their_group(
    monkeypatch,
) -> None:
    """robust.allocation.represent: the probe's owned images stay in the shared pool as the
    real images of their group they restarted from, not the base method's start."""
    probe = probe_given_back(monkeypatch)
    settings = AllocationSettings(min_per_group=8, train_steps=5)  # represent: the default
    assert settings.represent
    learner = learner_for(
        MaxGroup(), KnownSubgroups(far_off()), RobustPlan(matching=True), allocation=settings
    )
    start = learner.images.detach().clone()
    learner.regroup(learner.new_net())  # iteration 0: allocate by size, measure, give back
    x, _ = real_data()
    assert probe and bool((learner.ownership.owners == SHARED).all())
    images = learner.images.detach()
    for row in range(len(start)):
        if row not in probe:
            assert torch.equal(images[row], start[row])
            continue
        members = x[learner.pool.groups == probe[row]]
        assert any(torch.equal(images[row], m) for m in members)
    assert any(not torch.equal(images[row], start[row]) for row in probe)  # not the base start


@pytest.mark.parametrize("step", [0.0, 1.0])
def test_represent_step_zero_keeps_the_represented_images_real_images_of_their_group(
    monkeypatch, step
) -> None:
    """robust.allocation.represent_step scales the represented rows' image steps: at 0 they
    stay the real images of their group they restarted from while every other image is
    learned; at 1 (the default) they are learned as any shared image."""
    probe = probe_given_back(monkeypatch)
    settings = AllocationSettings(min_per_group=8, train_steps=5, represent_step=step)
    learner = learner_for(
        MaxGroup(), KnownSubgroups(far_off()), RobustPlan(matching=True), allocation=settings
    )
    start = learner.images.detach().clone()
    fit(learner)
    represented = torch.nonzero(learner.ownership.represented).flatten().tolist()
    assert represented == sorted(probe) and bool((learner.ownership.owners == SHARED).all())
    x, _ = real_data()
    images = learner.images.detach()
    for row in represented:
        members = x[learner.pool.groups == probe[row]]
        assert any(torch.equal(images[row], m) for m in members) == (step == 0)
    others = [row for row in range(len(start)) if row not in represented]
    assert others and all(not torch.equal(images[r], start[r]) for r in others)


def test_the_represented_rows_checkpoint_round_trip() -> None:
    own = Ownership(2, 3, AllocationSettings(represent_step=0.0))
    own.owners = torch.full((6,), SHARED)
    own.represented = torch.tensor([True, False, False, False, True, False])
    restored = Ownership(2, 3, AllocationSettings(represent_step=0.0))
    restored.load_state(own.state())
    assert torch.equal(restored.represented, own.represented)
    assert torch.equal(restored.step_scale(), torch.tensor([0.0, 1, 1, 1, 0, 1]))
    assert Ownership(2, 3, AllocationSettings()).step_scale() is None
