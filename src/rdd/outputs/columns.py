"""The accuracy figures a run reports, as table columns: one list for the run's own summary
(rdd.outputs.summary) and for rdd.report's tables."""

from __future__ import annotations

import re
from collections.abc import Iterable

# metrics.json key -> column title, in display order (percent). "group_*" stands for each
# altered known group of data.subgroup (group_<transform>_acc); its clean group is test_acc.
FIGURES = {
    "test_acc": "clean",
    "val_acc": "val",
    "mean_cluster_acc": "mean cluster",
    "worst_cluster_acc": "worst cluster",
    "group_*": "{} group",
    "worst_group_acc": "worst group",
    "worst_class_acc": "worst class",
    "noise_acc": "noise",
    "blur_acc": "blur",
    "invert_acc": "invert",
    "corruption_acc": "corruptions",
    # How well the run's subgroups found data.subgroup's rare images (rdd.distill.realpool): the group
    # holding most of a class's altered images, its share of them (purity) and theirs in it.
    "cluster_rare_purity": "rare purity",
    "cluster_rare_recall": "rare recall",
}
GROUP_KEY = re.compile(r"^group_(.+)_acc$")


def figure_columns(keys: Iterable[str], skip: Iterable[str] = ()) -> dict[str, str]:
    """metrics key -> title of the FIGURES present among ``keys``, in display order."""
    present, skipped = set(keys), set(skip)
    columns = {}
    for key, title in FIGURES.items():
        if key in skipped:
            continue
        if key == "group_*":
            names = sorted(m.group(1) for k in present if (m := GROUP_KEY.match(k)))
            columns |= {f"group_{n}_acc": title.format(n) for n in names if n != "clean"}
        elif key in present:
            columns[key] = title
    return columns
