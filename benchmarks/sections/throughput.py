"""Sections `compute`, `trial`, `baseline`: one trial's training throughput on the CPU, in images/s.

- compute: the compute limit, `core.train.train_step` alone on one random batch kept in memory
  (harness.StepLimit), in fp32 and bf16, NCHW and channels-last;
- trial: a trial as the trainable runs it on a CPU: `core.trial.build_trial` and its `run_epoch`,
  on the shared uint8 arrays of `core.data.load_dataset`;
- baseline: the usual Ray Tune PyTorch CIFAR-10 example's data path, a per-trial `ImageFolder` over
  the JPEG files and a `DataLoader` with PIL transforms.

All three train the same model with the same optimizer, loss, batch size and torch threads (the
hyperparameters of `hparams`), so the only difference between them is where the batches come from.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.harness import Context, Report, Section, StepLimit, Table, Target
from core.hparams import resolve
from core.precision import LAYOUTS, Mode

RESULTS = "RESULTS.md"
THREADS = 1
WARMUP_STEPS = 3  # untimed steps of `compute` (first calls allocate and pick kernels)


@dataclass(frozen=True)
class Sizes:
    width: float  # ResNet-18 channel width (0.25: 16..128 channels, a CPU-sized model)
    batch: int
    compute_steps: int  # timed train steps of `compute`, per mode
    subset: int  # train images of `trial` and `baseline` (the same files in both)
    epochs: int  # timed epochs of `trial` and `baseline`, after one warm-up epoch


FULL = Sizes(width=0.25, batch=128, compute_steps=20, subset=5_000, epochs=2)
QUICK = Sizes(width=0.0625, batch=32, compute_steps=2, subset=256, epochs=1)

TRIAL_VS_LIMIT = Target("trial >= 0.9 of the fastest mode's compute limit", ">=", 0.90)
TRIAL_VS_USUAL = Target("trial >= 2.5x the usual pipeline's trial", ">=", 2.5)


def hparams(sizes: Sizes) -> dict:
    """The trial of all three sections: the project's defaults (SGD, momentum 0.9, weight decay
    5e-4, cosine) at the section's width and batch, with lr 0.05."""
    return resolve({"width": sizes.width, "batch_size": sizes.batch, "lr": 0.05})


def compute_limit(sizes: Sizes, mode: Mode, steps: int | None = None) -> dict:
    """Images/s of the train step alone in `mode`, one thread, after warm-up steps."""
    torch.set_num_threads(THREADS)
    bench = StepLimit(torch.device("cpu"), hparams(sizes), mode)
    bench.run(WARMUP_STEPS)
    row = bench.images_per_s(steps or sizes.compute_steps)
    return {"threads": THREADS, "precision": mode.precision, "layout": mode.layout, **row}


def run_compute(ctx: Context) -> list[dict]:
    """The limit in each mode that runs safely here; a mode the trial's own layout probe refuses
    on this CPU (oneDNN crashes some channels-last shapes) is listed, not run in this process."""
    rows = []
    for precision in ("fp32", "bf16"):
        for layout in reversed(LAYOUTS):
            refused = _refused(ctx.sizes, Mode(precision, layout))
            rows.append({"threads": THREADS, "precision": precision, "layout": layout,
                         "steps": 0, "images_per_s": None, "refused": refused} if refused
                        else compute_limit(ctx.sizes, Mode(precision, layout)))
    return rows


def _refused(sizes: Sizes, mode: Mode) -> str:
    """Why the trial's layout probe refuses `mode` for this section's model here ('' if not)."""
    from benchmarks.sections.models import model_spec_of
    from core.precision import safe_on_cpu

    spec = model_spec_of("resnet18", {"width": sizes.width})
    return safe_on_cpu(mode, spec, (3, 32, 32), sizes.batch, THREADS).why


@functools.lru_cache(maxsize=1)  # `trial` and `baseline` in one run: decoded once
def _load(data_dir: Path, subset: int):
    from core.data import load_dataset

    # `trial` and `baseline` train on all of the subset: no validation split (val_fraction 0).
    with tempfile.TemporaryDirectory(prefix="tune-run-bench-cache-") as cache:
        start = time.perf_counter()
        data = load_dataset("cifar10", str(data_dir), 0.0, subset, 0, cache)
        return data, time.perf_counter() - start  # cold: no .npz cache yet


def trial_throughput(data, sizes: Sizes) -> dict:
    """Images/s of `run_epoch`'s training (train_epoch's own figure) over whole epochs of
    `data.train_x`, after one warm-up epoch: the trial as the trainable sets it up on a CPU
    (`build_trial`, precision auto), one thread."""
    from core.trial import build_trial

    torch.set_num_threads(THREADS)
    trial = build_trial(data, torch.device("cpu"), model_name="resnet18",
                        max_epochs=1 + sizes.epochs, **hparams(sizes))
    results = [trial.run_epoch(epoch) for epoch in range(1, 2 + sizes.epochs)]
    timed = [r.stats for r in results[1:]]
    images, seconds = sum(s.images for s in timed), sum(s.seconds for s in timed)
    return {"threads": THREADS, "precision": trial.mode.precision, "layout": trial.mode.layout,
            "epochs": sizes.epochs, "train_images": len(data.train_y), "images": images,
            "seconds": seconds, "images_per_s": images / seconds,
            "epoch_seconds": [s.seconds for s in timed], "warmup_seconds": results[0].stats.seconds}


def run_trial(ctx: Context) -> dict:
    data, decode_seconds = _load(ctx.data_dir, ctx.sizes.subset)
    # The fastest mode's limit again right before and after the trial: the machine's speed drifts
    # by tens of percent within minutes here, so the ratio compares a pair.
    fastest = _fastest(ctx.earlier)
    mode = Mode(fastest["precision"], fastest["layout"]) if fastest else None
    before = compute_limit(ctx.sizes, mode) if mode else None
    trial = trial_throughput(data, ctx.sizes)
    after = compute_limit(ctx.sizes, mode) if mode else None
    return {"decode_seconds": decode_seconds, **trial, "limit_before": before, "limit_after": after}


def run_baseline(ctx: Context) -> dict:
    data, _ = _load(ctx.data_dir, ctx.sizes.subset)
    files = subset_files(ctx.data_dir, ctx.sizes.subset, 0)
    return baseline_path(ctx.data_dir, files, data.mean, data.std, ctx.sizes, workers=2)


def subset_files(root: Path, n: int, seed: int) -> set[str]:
    """The train files `load_dataset(subset=n, seed=seed)` decodes, chosen by the same code."""
    from core.data import _take_list
    from core.sources import list_class_folders

    files, _ = list_class_folders(root / "train", root)
    return {path for path, _ in _take_list(files, n, seed)}


def baseline_path(root: Path, files: set[str], mean: tuple[float, ...], std: tuple[float, ...],
                  sizes: Sizes, workers: int) -> dict:
    """Images/s of the Ray Tune CIFAR-10 example's loop over whole epochs, data loading included.

    As in the example, each trial builds its own `ImageFolder` and a `DataLoader` whose workers
    decode and transform every image with PIL in every epoch (not persistent workers, no
    drop_last), fp32, NCHW. The `ImageFolder` scan is timed apart (`setup_seconds`).
    """
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from core.losses import classification_loss
    from core.models import build_model
    from core.optim import make_optimizer

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    hp = hparams(sizes)
    model = build_model("resnet18", 10, 3, width=hp["width"])
    optimizer = make_optimizer(hp["optimizer"], model.parameters(), hp["lr"], hp["momentum"],
                               hp["weight_decay"], hp["nesterov"])
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    start = time.perf_counter()
    folder = ImageFolder(str(root / "train"), transform=transform)
    trainset = Subset(folder, [i for i, (path, _) in enumerate(folder.samples) if path in files])
    setup_seconds = time.perf_counter() - start
    if len(trainset) != len(files):
        raise RuntimeError(f"ImageFolder found {len(trainset)} of the {len(files)} subset files")
    loader = DataLoader(trainset, batch_size=hp["batch_size"], shuffle=True, num_workers=workers)
    model.train()
    seconds, images = [], 0
    for epoch in range(1 + sizes.epochs):
        start, running_loss = time.perf_counter(), 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = classification_loss(model(inputs), labels, 0.0)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()  # the example's running loss, one sync per step
            if epoch > 0:
                images += len(labels)
        seconds.append(time.perf_counter() - start)
    timed = sum(seconds[1:])
    return {"threads": THREADS, "workers": workers, "epochs": sizes.epochs,
            "train_images": len(trainset), "images": images, "seconds": timed,
            "images_per_s": images / timed, "epoch_seconds": seconds[1:],
            "warmup_seconds": seconds[0], "setup_seconds": setup_seconds}


# ---------------------------------------------------------------------------------------------------
# Reports.


def _fastest(r: dict) -> dict | None:
    measured = [c for c in r.get("compute", []) if c.get("images_per_s")]
    return max(measured, key=lambda c: c["images_per_s"], default=None)


def _model_line(r: dict) -> str:
    sizes = r.get("sizes", {}).get("compute") or {"width": FULL.width, "batch": FULL.batch}
    return (f"Model in every section of this file: ResNet-18 width {sizes['width']}, batch "
            f"{sizes['batch']}, 32x32, SGD (momentum 0.9, weight decay 5e-4), cross-entropy; "
            "CPU only.")


def report_compute(r: dict) -> Report:
    rows = [[c["precision"], c["layout"], c["threads"], c["steps"],
             c["images_per_s"] if c.get("images_per_s") else f"refused: {c.get('refused')}"]
            for c in r["compute"]]
    fastest = _fastest(r)
    return Report("1. The compute limit in each mode", [
        _model_line(r),
        "The train step alone (`core.train.train_step`: forward, loss, backward, SGD step) on one "
        "random batch kept in memory, one thread, after warm-up steps; bf16 is `torch.autocast` "
        "(weights stay fp32), channels-last puts the model and the batch in that layout. Fastest: "
        f"{fastest['precision']} {fastest['layout']}.",
        Table(["precision", "layout", "threads", "timed steps", "images/s"], rows)])


def report_trial(r: dict) -> Report:
    t = r["trial"]
    fastest = _fastest(r)
    blocks = [f"`core.trial.build_trial` and its `run_epoch` as the trainable runs them on a CPU: "
              f"the shared uint8 arrays wrapped without a copy, batched crop/flip/normalise, the "
              f"precision and layout that `precision: auto` picks here (**{t['precision']} "
              f"{t['layout']}**), one thread, {t['train_images']:,} CIFAR-10 images (decoded once in "
              f"{t['decode_seconds']:.1f} s), {t['epochs']} timed epochs after a warm-up epoch: "
              f"**{t['images_per_s']:.0f} images/s** (training alone, train_epoch's own clock)."]
    verdicts = []
    if fastest and t.get("limit_before") and t.get("limit_after"):
        around = (t["limit_before"]["images_per_s"] + t["limit_after"]["images_per_s"]) / 2
        share = t["images_per_s"] / around
        blocks.append(f"The fastest mode's limit measured again right before and after the trial: "
                      f"{t['limit_before']['images_per_s']:.0f} and "
                      f"{t['limit_after']['images_per_s']:.0f} images/s (section 1's: "
                      f"{fastest['images_per_s']:.0f}); the trial is {share:.2f} of their mean, "
                      f"{t['images_per_s'] / fastest['images_per_s']:.2f} of section 1's.")
        verdicts.append(TRIAL_VS_LIMIT.check(
            share, f"{share:.2f} ({t['images_per_s']:.0f} / {around:.0f})",
            TRIAL_VS_LIMIT.what + " (measured right before and after it)"))
    elif fastest:
        share = t["images_per_s"] / fastest["images_per_s"]
        verdicts.append(TRIAL_VS_LIMIT.check(
            share, f"{share:.2f} ({t['images_per_s']:.0f} / {fastest['images_per_s']:.0f})"))
    else:
        verdicts.append(TRIAL_VS_LIMIT.check(None, "`compute` not run"))
    return Report("2. tune-run's trial", blocks, verdicts)


def report_baseline(r: dict) -> Report:
    b = r["baseline"]
    verdicts = []
    if "trial" in r:
        ratio = r["trial"]["images_per_s"] / b["images_per_s"]
        verdicts.append(TRIAL_VS_USUAL.check(ratio, f"{ratio:.2f}x ({r['trial']['images_per_s']:.0f}"
                                                    f" / {b['images_per_s']:.0f})"))
    else:
        verdicts.append(TRIAL_VS_USUAL.check(None, "`trial` not run"))
    return Report("3. The usual Ray Tune pipeline's trial", [
        f"The loop of Ray's PyTorch CIFAR-10 example on the same files, model, batch and thread: a "
        f"per-trial `ImageFolder` and a `DataLoader` with {b['workers']} worker processes decoding "
        f"and transforming every image with PIL in every epoch, fp32, NCHW: **{b['images_per_s']:.0f}"
        f" images/s** ({b['epochs']} timed epochs after a warm-up epoch)."], verdicts)


SECTIONS = (
    Section("compute", "the train step alone on random tensors in fp32/bf16, NCHW/channels-last",
            RESULTS, run_compute, report_compute, (), FULL, QUICK),
    Section("trial", "a trial as the trainable sets it up (core.trial) on load_dataset's arrays",
            RESULTS, run_trial, report_trial, (TRIAL_VS_LIMIT,), FULL, QUICK, ("data_dir",)),
    Section("baseline", "the Ray Tune example's ImageFolder + DataLoader trial on the same files",
            RESULTS, run_baseline, report_baseline, (TRIAL_VS_USUAL,), FULL, QUICK, ("data_dir",)),
)
