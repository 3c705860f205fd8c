"""A named dataset's root must hold that dataset: its classes (an error before any decoding)
and about its number of images (a warning at start, beside what was read)."""

from __future__ import annotations

import pytest

from rdd.config.errors import UserError
from rdd.data import cache, load_dataset, sources
from rdd.data.expected import EXPECTED, check_class_folders, size_warning
from tests.conftest import TINY
from tests.data.test_data import CIFAR10, make_tree

FASHION = list(sources.KNOWN_CLASSES["fashion_mnist"])


def test_missing_classes_are_named_and_a_subset_is_a_choice(tmp_path) -> None:
    root = make_tree(tmp_path / "c3", ["bird", "cat", "dog"], n_train=1, n_test=1)
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root)
    message = str(err.value)
    assert "holds 3 of cifar10's 10 class folders (missing: airplane, automobile, deer" in message
    assert "and 2 more): point data.root at the whole dataset" in message
    assert "data.classes=[bird,cat,dog] to use these classes on purpose" in message
    subset = load_dataset("cifar10", root, classes=["bird", "cat", "dog"])
    assert subset.classes == ["bird", "cat", "dog"]


def test_extra_classes_and_unnamed_datasets(tmp_path) -> None:
    with pytest.raises(
        UserError, match="holds 11 class folders but cifar10 has 10: .*image_folder"
    ):
        check_class_folders("cifar10", tmp_path, [*CIFAR10, "unicorn"], None)
    check_class_folders("cifar10", tmp_path, CIFAR10, None)
    check_class_folders("image_folder", tmp_path, ["a", "b"], None)  # any tree: no expectation
    # Folder names compared as the loader compares them ("T-shirt/top" cannot be a folder).
    folders = ["tshirt_top", *FASHION[1:9]]
    with pytest.raises(UserError, match=r"\(missing: Ankle boot\)"):
        check_class_folders("fashion_mnist", tmp_path, folders, None, FASHION)
    with pytest.raises(UserError, match="holds 3 of cifar100's 100 class folders: point"):
        check_class_folders("cifar100", tmp_path, ["apple", "bed", "cup"], None)


def test_a_cache_written_without_the_check_does_not_hide_a_wrong_root(tmp_path) -> None:
    root = make_tree(tmp_path / "c2", ["cat", "dog"], n_train=1, n_test=1)
    read = sources.load_source("image_folder", root)  # what an earlier version cached as cifar10
    path = tmp_path / "cache" / cache.cache_file_name("cifar10", root, "auto", None, None)
    cache._write(path, read)
    with pytest.raises(UserError, match="holds 2 of cifar10's 10 class folders"):
        load_dataset("cifar10", root, cache_dir=tmp_path / "cache")


class Counts:
    """What size_warning reads of a set-up RealDataModule."""

    def __init__(self, name: str, classes: int, train: int, val: int, test: int) -> None:
        self.name, self.num_classes = name, classes
        self.train_y, self.val_y, self.test_y = [0] * train, [0] * val, [0] * test


def test_far_fewer_images_than_the_dataset_has_are_a_warning() -> None:
    assert size_warning(Counts("cifar10", 10, 45_000, 5_000, 10_000)) is None
    assert size_warning(Counts("cifar10", 3, 13_500, 1_500, 3_000)) is None  # data.classes
    assert size_warning(Counts("svhn", 10, 40_000, 0, 26_032)) is None  # over half: not "far"
    assert size_warning(Counts("digits", 10, 10, 0, 10)) is None  # no published size here
    few = size_warning(Counts("cifar10", 10, 4_500, 500, 10_000))
    assert few.startswith("cifar10 has 50000 training images in these 10 classes but data.root")
    assert "holds 5000: check that the copy is complete" in few
    test = size_warning(Counts("cifar100", 100, 50_000, 0, 400))
    assert test.startswith("cifar100 has 10000 test images")
    assert set(EXPECTED) == set(sources.TORCHVISION_SOURCES)  # every named dataset knows its size


def test_a_wrong_root_is_one_line_before_anything_is_printed(tmp_path, cli) -> None:
    """`data=cifar10 data.root=<3 of its class folders>` used to distil a 3-class cifar10."""
    root = make_tree(tmp_path / "c3", ["bird", "cat", "dog"], n_train=4, n_test=1)
    run_dir = tmp_path / "run"
    result = cli(
        "rdd.run",
        *TINY,
        "data=cifar10",
        f"data.root={root}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and result.stdout == "", result.stdout[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: data.root '")
    assert not run_dir.exists()


def test_the_start_says_what_was_read_and_warns_of_a_partial_copy(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # no warning of busy cores between the lines
    root = make_tree(tmp_path / "c3", ["bird", "cat", "dog"], n_train=4, n_test=2)
    args = [*TINY, "matching=random", "data=cifar10", f"data.root={root}", "print_config=false"]
    args.append("eval.partition.k=2")
    result = cli("rdd.run", *args, "data.classes=[bird,cat,dog]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rdd.run: random on cifar10"))
    read = f"data: cifar10 from {root}: 3 classes, 9 train / 3 val / 6 test images of 3x8x8"
    assert lines[start + 1] == read
    assert lines[start + 2].startswith(
        "warning: cifar10 has 15000 training images in these 3 classes but data.root holds 12"
    )
    run_log = next((tmp_path / "logs").rglob("run.log")).read_text()
    assert read in run_log and run_log.count("warning: cifar10 has 15000") == 1
