"""benchmarks/parity/accuracy.py without the references: the commands each side gets, the IDM
scratch copy's patches, and the one-line refusals (CI has no reference checkouts)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "parity_accuracy", REPO / "benchmarks" / "parity" / "accuracy.py"
)
accuracy = importlib.util.module_from_spec(spec)
sys.modules["parity_accuracy"] = accuracy  # dataclasses look their module up
saved_path = list(sys.path)
spec.loader.exec_module(accuracy)  # it puts benchmarks/parity first on sys.path
sys.path[:] = saved_path  # where a module named `common` would shadow another
copies = sys.modules["reference_copies"]

IDM = accuracy.ITEMS["idm10"]
# IDM_cifar10.py's lines patch_idm needs, and a script that fails at once.
EVAL_POOL_LINE = "model_eval_pool = get_eval_pool(args.eval_mode, 'ConvNet', args.model)\n"
FAILING_SCRIPT = f"import sys\nsys.exit(3)\n{EVAL_POOL_LINE}"


def flags(cmd: list[str]) -> dict[str, str | None]:
    """``--flag value`` pairs of a command (a flag without a value maps to None)."""
    out: dict[str, str | None] = {}
    for i, word in enumerate(cmd):
        if word.startswith("--"):
            nxt = cmd[i + 1] if i + 1 < len(cmd) else "--"
            out[word] = None if nxt.startswith("--") else nxt
    return out


def fake_idm(root: Path, script: str = FAILING_SCRIPT) -> Path:
    root.mkdir()
    for name in copies.REFERENCES["idm"].required:
        (root / name).write_text("")
    (root / "IDM_cifar10.py").write_text(script)
    return root


def fake_data(root: Path) -> Path:
    for split in ("train", "test"):
        (root / split / "airplane").mkdir(parents=True)
    return root


def test_idm10_reference_command_sets_the_budget_and_the_published_run(tmp_path) -> None:
    cmd = accuracy.reference_command(IDM, tmp_path)
    assert cmd[1:3] == ["parity_shim.py", "IDM_cifar10.py"]
    got = flags(cmd)
    expected = {"--model": "ConvNetW32", "--ipc": "10", "--Iteration": "10", "--num_exp": "1"}
    expected |= {"--num_eval": "2", "--epoch_eval_train": "300", "--dataset": "CIFAR10"}
    # the final set only: it evaluates at multiples of --eval_interval, skipping 0
    expected |= {"--eval_mode": "S", "--eval_interval": "10", "--ce_weight": "0.5"}
    expected |= {"--embed_last": "1000", "--init": "real", "--aug": None, "--syn_ce": None}
    assert {k: got.get(k, "absent") for k in expected} == expected
    assert "--net_decay" in got and got["--save_path"] == str(tmp_path / "result")


def test_idm10_reference_queue_is_rdds(tmp_path) -> None:
    """The reference's queue and steps are the ones rdd's composed run uses."""
    run = accuracy.rdd_run_command(IDM, 0, tmp_path, tmp_path / "run")
    overrides = run[run.index("rdd.run") + 1 : -1]  # less hydra.run.dir
    assert "experiment=idm_cifar10_ipc10" in overrides and "matching.iterations=10" in overrides
    assert {"net=convnet_w32", "eval.num_nets=2", "eval.epochs=300"} <= set(overrides)
    m = compose_config(*overrides).matching
    got = flags(accuracy.reference_command(IDM, tmp_path))
    pairs = {"--net_num": m.queue_size, "--net_generate_interval": m.generate_every}
    pairs |= {"--net_push_num": m.push_nets, "--fetch_net_num": m.fetch_nets}
    pairs |= {"--model_train_steps": m.train_steps, "--trained_bs": m.batch_train}
    pairs |= {"--train_net_num": m.sampled_nets, "--batch_real": m.batch_real}
    pairs |= {"--lr_img": m.lr_img, "--lr_net": m.lr_net, "--Iteration": m.iterations}
    for flag, value in pairs.items():
        assert float(got[flag]) == float(value), flag
    assert (m.name, m.factor, m.ce_weight, m.step_per_class) == ("idm", 2, 0.5, True)


def test_idm10_rdd_reads_the_reference_set_packed_2x2(tmp_path) -> None:
    cmd = accuracy.rdd_evaluate_command(IDM, 1, "/x/acc_0.3.pkl", tmp_path, tmp_path / "e")
    assert cmd[cmd.index("rdd.evaluate") + 1 :][:4] == [
        "synset=/x/acc_0.3.pkl",
        "synset_format=idm",
        "factor=2",
        "normalization=mtt",
    ]
    assert {
        "seed=1",
        "net=convnet_w32",
        "eval.num_nets=2",
        f"hydra.run.dir={tmp_path / 'e'}",
    } <= set(cmd)


def test_a_smoke_budget_is_tagged_and_recorded() -> None:
    assert accuracy.with_budget(IDM, iterations=None, eval_nets=2) is IDM
    assert IDM.folder(0) == "idm10_s0"  # the item's own budget keeps its folders
    smoke = accuracy.with_budget(IDM, iterations=2, eval_nets=1, eval_epochs=None)
    assert smoke.folder(0) == "idm10_it2_e1x300_s0"
    row = {"method": "idm", "ipc": 10, "seed": 0, "ours": 1.0, "reference": 2.0}
    full = [row | {"protocol": "own"} | IDM.budget()]
    small = [row | {"protocol": "own"} | smoke.budget()]
    assert accuracy.merge(full, small) == full + small  # neither replaces the other
    assert len(accuracy.table(full + small).splitlines()) == 4  # nor are they pooled


def test_the_idm_copy_is_patched(tmp_path) -> None:
    checkout = fake_idm(tmp_path / "idm", f"x = 1\n{EVAL_POOL_LINE}")
    code = tmp_path / "code"
    copies.make_copy("idm", checkout, code, "IDM_cifar10.py")
    text = (code / "IDM_cifar10.py").read_text()
    assert "get_eval_pool(args.eval_mode, args.model, args.model)" in text
    assert "'ConvNet'" not in text
    assert (code / "checkpoints").is_dir() and (code / "parity_shim.py").is_file()
    torch = pytest.importorskip("torch")
    stub: dict = {}
    exec((code / "torchnet.py").read_text(), stub)
    meter = stub["meter"].ClassErrorMeter(accuracy=True)
    meter.add(
        torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0, 1, 1])
    )
    assert (meter.n, meter.value()[0]) == (4, 75.0)
    meter.reset()
    assert meter.n == 0


# VICO's main.py loop, reduced to what its patches touch (CRLF line endings, as in VICO's).
FAKE_VICO_LOOP = """import os
import torch
class Args:
    Iteration, epoch_eval_train, dsa, device = 2, 300, True, "cpu"
args, images, image_syn = Args(), [0], torch.zeros(2)
get_time = lambda: "now"
class Optimizer:
    def step(self):
        images[0] += 1
optimizer_img, evaluated = Optimizer(), []
print('%s training begins'%get_time())
images[0] += int(image_syn[0])
for it in range(args.Iteration+1):
    if it == args.Iteration:
        if args.dsa:
            args.epoch_eval_train = 1000
        evaluated.append((images[0], args.epoch_eval_train))
    for ol in range(2):
        optimizer_img.step()
    if it == args.Iteration:
        saved = images[0]
print(evaluated[0][0], evaluated[0][1], saved)
""".replace("\n", "\r\n")


# utils.py's Siamese augmentation on a batch of one (DSA at IPC 1).
FAKE_SIAMESE = """import torch
randb = torch.rand(1, 1, 1, 1)
with torch.no_grad():
    randb[:] = randb[0]
print("ok")
""".replace("\n", "\r\n")


def fake_vico(root: Path) -> Path:
    """A checkout whose scripts are FAKE_VICO_LOOP and whose utils.py is FAKE_SIAMESE."""
    root.mkdir()
    for name in copies.REFERENCES["vico"].required:
        (root / name).write_bytes(FAKE_VICO_LOOP.encode())
    (root / "utils.py").write_bytes(FAKE_SIAMESE.encode())
    return root


@pytest.mark.parametrize("patched", [False, True])
def test_the_vico_copy_saves_the_set_its_final_evaluation_scored(tmp_path, patched) -> None:
    """Unpatched, VICO's loop evaluates after 2 iterations (4 image steps) for 1000 epochs and
    saves the set after a third (6 steps); patched, it evaluates for the epochs given and
    saves the set it evaluated, as rdd's run of 2 iterations ends."""
    checkout = fake_vico(tmp_path / "vico")
    code = tmp_path / "code"
    if patched:
        copies.make_copy("vico", checkout, code, "main.py")
    else:
        code = checkout
    assert (b"\r\n" in (code / "main.py").read_bytes()) and b"\n\n" not in (
        code / "main.py"
    ).read_bytes()
    run = subprocess.run(
        [sys.executable, "main.py"], cwd=code, capture_output=True, text=True, check=True
    )
    assert run.stdout.split()[-3:] == (["4", "300", "4"] if patched else ["4", "1000", "6"])
    # current PyTorch refuses the self-aliasing write; the patched copy runs it
    siamese = subprocess.run([sys.executable, "utils.py"], cwd=code, capture_output=True, text=True)
    assert (siamese.returncode == 0) == patched, siamese.stderr[-500:]


@pytest.mark.parametrize("name", ["dsa1", "dsa10"])
def test_the_dsa_items_run_vicos_published_dsa_command(tmp_path, name) -> None:
    """main.py's --dsa_strategy defaults to 'None' (no augmentation, in matching and in its
    evaluation); the readme's DSA command names the strategy rdd's dsa config uses."""
    cmd = flags(accuracy.reference_command(accuracy.ITEMS[name], tmp_path))
    assert cmd["--method"] == "DSA"
    assert cmd["--dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"
    import inspect

    from rdd.matching.gradient import GradientMatching

    default = inspect.signature(GradientMatching).parameters["dsa_strategy"].default
    strategy = compose_config("experiment=dsa_cifar10").matching.get("dsa_strategy", default)
    assert strategy == cmd["--dsa_strategy"]


def test_an_unknown_idm_version_is_refused(tmp_path) -> None:
    checkout = fake_idm(tmp_path / "idm", "print('another version')\n")
    with pytest.raises(copies.BenchError, match="no line .*get_eval_pool"):
        copies.make_copy("idm", checkout, tmp_path / "code", "IDM_cifar10.py")


def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    code = accuracy.main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_idm_path_without_its_script_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "idm").mkdir()
    (tmp_path / "idm" / "dc_utils.py").write_text("")
    data, out = fake_data(tmp_path / "data"), tmp_path / "a.json"
    code, err = run_main(
        capsys, "--items", "idm10", "--idm", str(tmp_path / "idm"), "--data", str(data),
        "--out", str(out),
    )  # fmt: skip
    assert code == 2 and len(err) == 1
    assert "is not a checkout of uitrbn/IDM: no IDM_cifar10.py" in err[0]
    assert "dc_utils.py" not in err[0] and not out.exists()


def test_idm10_without_idm_is_one_line(tmp_path, capsys) -> None:
    code, err = run_main(capsys, "--items", "idm10", "--data", str(fake_data(tmp_path)))
    assert code == 2 and err == ["error: --items idm10: give --idm <checkout of uitrbn/IDM>"]


def test_a_failing_reference_run_names_its_command_and_log_and_keeps_rows(tmp_path, capsys) -> None:
    out = tmp_path / "accuracy.json"
    kept = [{"method": "dm", "ipc": 10, "seed": 0, "protocol": "own", "ours": 1.0}]
    out.write_text(json.dumps(kept))
    checkout, data = fake_idm(tmp_path / "idm"), fake_data(tmp_path / "data")
    code, err = run_main(
        capsys, "--items", "idm10", "--seeds", "0", "--idm", str(checkout), "--data", str(data),
        "--work", str(tmp_path / "work"), "--out", str(out),
    )  # fmt: skip
    log = tmp_path / "work" / "reference" / "idm10_s0" / "run.log"
    assert code == 2 and len(err) == 1
    assert "parity_shim.py IDM_cifar10.py --method IDM" in err[0]
    assert f"failed (exit 3): see {log}" in err[0] and log.is_file()
    assert json.loads(out.read_text()) == kept


def test_rows_measured_before_a_failure_stay(tmp_path, capsys, monkeypatch) -> None:
    def measure(item, seed, checkout, data, work):
        if seed == 1:
            raise accuracy.BenchError("`x` failed (exit 1): see y.log")
        row = {"method": item.method, "ipc": item.ipc, "seed": seed, "ours": 5.0, "reference": 4}
        return [row | {"protocol": p} | item.budget() for p in ("own", "rdd")]

    monkeypatch.setattr(accuracy, "measure", measure)
    out, checkout = tmp_path / "a.json", fake_idm(tmp_path / "idm")
    code, err = run_main(
        capsys, "--items", "idm10", "--seeds", "0,1", "--idm", str(checkout), "--data",
        str(fake_data(tmp_path / "data")), "--out", str(out),
    )  # fmt: skip
    assert code == 2 and err == ["error: `x` failed (exit 1): see y.log"]
    assert [(r["seed"], r["protocol"]) for r in json.loads(out.read_text())] == [
        (0, "own"),
        (0, "rdd"),
    ]


MTT = accuracy.ITEMS["mtt1"]


def test_mtt1_reference_command_runs_rdds_overlay_at_the_same_budget(tmp_path) -> None:
    """distill.py gets the settings of rdd's composed run, the budget, and the buffer both
    sides' runs share; it takes neither --num_exp nor --save_path."""
    folder = tmp_path / "reference" / MTT.folder(0)
    got = flags(accuracy.reference_command(MTT, folder))
    run = accuracy.rdd_run_command(MTT, 0, tmp_path, tmp_path / "rdd" / MTT.folder(0))
    cfg = compose_config(*run[run.index("rdd.run") + 1 : -1])
    m = cfg.matching
    pairs = {"--syn_steps": m.syn_steps, "--expert_epochs": m.expert_epochs}
    pairs |= {"--max_start_epoch": m.max_start_epoch, "--lr_img": m.lr_img, "--lr_lr": m.lr_lr}
    pairs |= {"--lr_teacher": m.lr_teacher, "--Iteration": m.iterations, "--ipc": cfg.ipc}
    pairs |= {"--num_eval": cfg.eval.num_nets, "--epoch_eval_train": cfg.eval.epochs}
    for flag, value in pairs.items():
        assert float(got[flag]) == float(value), flag
    assert "--zca" in got and cfg.data.zca and cfg.data.val_fraction == 0
    assert got["--pix_init"] == "real" and m.name == "mtt"
    assert got["--buffer_path"] == str(tmp_path / "reference" / "mtt_buffer_2x4" / "buffers")
    assert "--num_exp" not in got and "--save_path" not in got


def test_mtt1_buffers_have_the_same_budget_on_both_sides(tmp_path) -> None:
    ref = flags(accuracy.reference_buffer_command(MTT, tmp_path / "reference"))
    runs = tmp_path / "rdd"
    cmd = accuracy.rdd_buffer_command(MTT, tmp_path, runs)
    overrides = cmd[cmd.index("rdd.buffer") + 1 : -1]
    experts = compose_config(*overrides).experts
    assert (int(ref["--num_experts"]), int(ref["--train_epochs"])) == (2, 4)
    assert (experts.num_experts, experts.epochs) == (2, 4)
    assert ref["--save_interval"] == ref["--num_experts"]  # buffer.py saves every n experts
    pairs = {"--lr_teacher": experts.lr, "--mom": experts.momentum}
    pairs |= {"--l2": experts.weight_decay, "--batch_train": experts.batch_size}
    for flag, value in pairs.items():
        assert float(ref[flag]) == float(value), flag
    assert "--zca" in ref and experts.dsa
    # rdd's runs of every seed look the buffer up where rdd.buffer puts it
    run = accuracy.rdd_run_command(MTT, 2, tmp_path, runs / MTT.folder(2))
    root = [w for w in run if w.startswith("experts.root=")]
    assert root == [w for w in overrides if w.startswith("experts.root=")] and len(root) == 1


def test_mtt1_rdd_reads_the_reference_set_in_zca_space(tmp_path) -> None:
    cmd = accuracy.rdd_evaluate_command(MTT, 0, "/x/images_best.pt", tmp_path, tmp_path / "e")
    after = cmd[cmd.index("rdd.evaluate") + 1 :]
    assert after[:3] == ["synset=/x/images_best.pt", "synset_format=mtt", "normalization=zca"]
    assert {"data.zca=true", "data.val_fraction=0", "net=convnet_w32"} <= set(after)
    assert MTT.budget() == {
        "iterations": 200, "eval_nets": 2, "eval_epochs": 300, "experts": 2, "expert_epochs": 4,
    }  # fmt: skip


# distill.py's loop, reduced to what its patches touch: evaluations at eval_it_pool, the
# saving block (CUDA), the best set's files, and the update after each pass.
FAKE_MTT_LOOP = """import os
import numpy as np
import torch
class wandb:
    log = staticmethod(lambda *args, **kwargs: None)
class Args:
    Iteration, eval_it, device = 3, 2, "cpu"
args, evaluated, save_dir = Args(), [], "."
image_syn, label_syn, syn_lr = torch.zeros(2), torch.tensor([0, 1]), torch.tensor(0.5)
eval_it_pool = np.arange(0, args.Iteration + 1, args.eval_it).tolist()
for it in range(0, args.Iteration+1):
    if it in eval_it_pool:
        evaluated.append(float(image_syn[0]))
        save_this_it = len(evaluated) == 1 or evaluated[-1] > max(evaluated[:-1])
        if save_this_it:
            with torch.no_grad():
                image_save = image_syn.cuda()
                torch.save(image_save.cpu(), os.path.join(save_dir, "images_best.pt"))
                torch.save(label_syn.cpu(), os.path.join(save_dir, "labels_best.pt"))
    wandb.log({"Synthetic_LR": syn_lr.detach().cpu()}, step=it)
    image_syn += 1
    syn_lr = syn_lr - 0.125
print(evaluated, float(torch.load("images_best.pt")[0]), float(image_syn[0]))
"""


# buffer.py's trajectory record, reduced: a snapshot at the start and after every epoch.
FAKE_MTT_BUFFER = """import torch
teacher_net = torch.nn.Linear(1, 1, bias=False)
torch.nn.init.zeros_(teacher_net.weight)
timestamps = []
timestamps.append([p.detach().cpu() for p in teacher_net.parameters()])
for e in range(2):
    with torch.no_grad():
        teacher_net.weight += 1
    timestamps.append([p.detach().cpu() for p in teacher_net.parameters()])
print(*[float(t[0]) for t in timestamps])
"""


def fake_mtt(root: Path, distill: str = FAKE_MTT_LOOP) -> Path:
    root.mkdir()
    for name in copies.REFERENCES["mtt"].required:
        (root / name).write_text(distill)
    (root / "buffer.py").write_text(FAKE_MTT_BUFFER)
    return root


def test_the_mtt_buffer_copy_records_each_epoch(tmp_path) -> None:
    """On a CPU, buffer.py's snapshots are the live parameters: every checkpoint of the
    trajectory is the last one; the copy's are the values of their epoch (as on a GPU)."""
    pytest.importorskip("torch")
    checkout = fake_mtt(tmp_path / "mtt")
    code = tmp_path / "code"
    copies.make_copy("mtt", checkout, code, "distill.py")
    runs = {}
    for name, folder in (("plain", checkout), ("copy", code)):
        run = subprocess.run(
            [sys.executable, "buffer.py"], cwd=folder, capture_output=True, text=True, check=True
        )
        runs[name] = run.stdout.split()
    assert runs == {"plain": ["2.0", "2.0", "2.0"], "copy": ["0.0", "1.0", "2.0"]}


def test_the_mtt_copy_evaluates_and_saves_the_final_set_with_its_step_size(tmp_path) -> None:
    """Patched, distill.py's loop evaluates once, after Iteration updates, saves that set with
    the step size it evaluated with (lr_best.pt) and stops there; unpatched it moves the set
    to CUDA to save it (none here: it fails)."""
    checkout = fake_mtt(tmp_path / "mtt")
    code = tmp_path / "code"
    copies.make_copy("mtt", checkout, code, "distill.py")
    run = subprocess.run([sys.executable, "distill.py"], cwd=code, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-800:]
    assert run.stdout.split() == ["[3.0]", "3.0", "3.0"]
    torch = pytest.importorskip("torch")
    assert float(torch.load(code / "lr_best.pt")) == 0.5 - 3 * 0.125
    if not torch.cuda.is_available():
        plain = subprocess.run([sys.executable, "distill.py"], cwd=checkout, capture_output=True)
        assert plain.returncode != 0


def test_an_unknown_mtt_version_is_refused(tmp_path) -> None:
    checkout = fake_mtt(tmp_path / "mtt", FAKE_MTT_LOOP.replace("image_syn.cuda()", "image_syn"))
    with pytest.raises(copies.BenchError, match=r"distill.py has 0 of `image_save = image_syn"):
        copies.make_copy("mtt", checkout, tmp_path / "code", "distill.py")


def test_mtt1_without_mtt_is_one_line(tmp_path, capsys) -> None:
    code, err = run_main(capsys, "--items", "mtt1", "--data", str(fake_data(tmp_path)))
    assert code == 2
    assert err == [
        "error: --items mtt1: give --mtt <checkout of GeorgeCazenavette/mtt-distillation>"
    ]


def test_the_vico_copy_starts_from_the_set_it_is_given(tmp_path) -> None:
    """With PARITY_START (--same-start), VICO's loop starts from that file's images."""
    torch = pytest.importorskip("torch")
    checkout = fake_vico(tmp_path / "vico")
    code = tmp_path / "code"
    copies.make_copy("vico", checkout, code, "main.py")
    torch.save(torch.tensor([10.0, 0.0]), tmp_path / "start.pt")
    env = {"PARITY_START": str(tmp_path / "start.pt")}
    run = subprocess.run(
        [sys.executable, "main.py"], cwd=code, capture_output=True, text=True, check=True,
        env=os.environ | env,
    )  # fmt: skip
    assert run.stdout.split()[-3:] == ["14", "300", "14"]  # started at 10, 4 updates
    b"\r\n" in (code / "main.py").read_bytes() and b"\n\n" not in (code / "main.py").read_bytes()


def test_same_start_keeps_rdds_run_and_tags_the_references(tmp_path) -> None:
    dsa1 = accuracy.ITEMS["dsa1"]
    same = accuracy.with_same_start(dsa1)
    assert same.rdd_folder(0) == dsa1.rdd_folder(0) == dsa1.folder(0) == "dsa1_s0"
    assert same.folder(0) == "dsa1_same_s0"
    row = {"method": "dsa", "ipc": 1, "seed": 0, "ours": 1.0, "reference": 2.0, "protocol": "own"}
    rows = [row | dsa1.budget(), row | dsa1.budget() | {"start": "same"}]
    assert accuracy.merge(rows[:1], rows[1:]) == rows  # neither replaces the other
    assert [line.split("|")[3].strip() for line in accuracy.table(rows).splitlines()[2:]] == [
        "own",
        "same",
    ]
    with pytest.raises(accuracy.BenchError, match="--same-start: the mtt1 reference"):
        accuracy.with_same_start(MTT)


def test_the_start_set_is_the_one_rdds_run_starts_from(tmp_path, monkeypatch) -> None:
    """start_set.py's images are the learner's at the start of rdd.run's distillation."""
    import rdd.run

    spec = importlib.util.spec_from_file_location(
        "start_set", REPO / "benchmarks" / "parity" / "start_set.py"
    )
    start_set = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(start_set)
    overrides = ("matching=dsa", "ipc=1", "logger=none", "seed=3")
    cfg = compose_config(*overrides, output_dir=tmp_path)
    saved = tmp_path / "start.pt"
    assert start_set.main([str(saved), *overrides, f"paths.output_dir={tmp_path}"]) == 0
    monkeypatch.setattr(rdd.run, "fit", lambda *args: None)  # the run, stopped at its start
    images, _, _ = rdd.run.distill(rdd.run.prepare(cfg))
    torch = pytest.importorskip("torch")
    assert torch.equal(torch.load(saved), images)
    other = compose_config(*overrides[:-1], "seed=4", output_dir=tmp_path)
    assert not torch.equal(start_set.start_images(other), images)  # seeded, not fixed


def load_evaluators():
    spec = importlib.util.spec_from_file_location(
        "parity_evaluators", REPO / "benchmarks" / "parity" / "evaluators.py"
    )
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    spec.loader.exec_module(module)
    sys.path[:] = saved
    return module


def test_evaluators_read_the_images_of_both_tools_sets(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from rdd.synset import SyntheticSet

    evaluators = load_evaluators()
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 0, 1, 1])
    res = tmp_path / "res_DSA_CIFAR10_ConvNetW32_2ipc.pt"
    torch.save({"data": [[images, labels]], "accs_all_exps": {}}, res)
    assert torch.equal(evaluators.set_images(res), images)
    synset = tmp_path / "synset.pt"
    meta = {"ipc": 2, "mean": [0.5] * 3, "std": [0.2] * 3, "num_classes": 2, "dataset": "cifar10"}
    SyntheticSet(images + 1, labels, meta).save(synset)
    assert torch.equal(evaluators.set_images(synset), images + 1)


def test_evaluators_refuse_an_item_vico_does_not_run(tmp_path, capsys) -> None:
    evaluators = load_evaluators()
    code = evaluators.main(
        ["--vico", str(tmp_path), "--data", str(tmp_path), "--item", "mtt1", "a=b.pt"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --item mtt1: choose one of VICO's items (dm10, dsa1, dsa10)"]
