"""The usual Ray Tune pipeline, as Ray's PyTorch CIFAR-10 example builds it: the yardstick.

Each trial builds its own `ImageFolder` over the JPEG files and a `DataLoader` whose worker processes
decode and transform every image with PIL in every epoch (RandomCrop, RandomHorizontalFlip,
ToTensor, Normalize), trains in fp32 with the default (NCHW) layout, evaluates on a validation
split through a second DataLoader, and reports with a checkpoint after every epoch; Ray's
`ASHAScheduler` stops trials early. Model, optimizer, learning-rate schedule, loss, batch size,
threads and the train/validation files are tune-run's, so only the pipeline differs.

    python -m benchmarks.usual_pipeline --data-dir D --subset 12000 --val-fraction 0.1667 \
        --num-samples 8 --max-epochs 4 --seed 0 --storage DIR --out result.json

It draws its configurations with Ray's BasicVariantGenerator from the same space and seed that
tune-run's `search: random` uses (section `searches`, benchmarks/sections/searches.py, checks that
both trained the same ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from core.data import _stratified_split, _take_list
from core.losses import classification_loss
from core.models import build_model
from core.optim import make_optimizer, make_schedule
from core.sources import list_class_folders
from core.train import steps_per_epoch

# The benchmark search's space: SGD over learning rate and weight decay, ResNet-18 at width 0.25.
BATCH, WIDTH = 128, 0.25


def search_space() -> dict:
    return {
        "lr": tune.loguniform(0.01, 0.4),
        "weight_decay": tune.loguniform(1e-5, 1e-2),
        "width": WIDTH,
        "batch_size": BATCH,
    }


def split_files(root: Path, subset: int, val_fraction: float, seed: int):
    """The train and validation files tune-run's load_dataset uses for the same settings."""
    files, classes = list_class_folders(root / "train", root)
    files = _take_list(files, subset, seed)
    kept, held = _stratified_split(np.array([label for _, label in files]), val_fraction, seed)
    return [files[i] for i in kept], [files[i] for i in held], classes


def mean_std(files: list) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images, as tune-run computes them."""
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in files[:2000]])
    pixels = pixels.reshape(-1, 3) / 255.0
    return pixels.mean(0).tolist(), pixels.std(0).tolist()


def train_trial(config: dict, train_files: list, val_files: list, classes: list, mean, std,
                max_epochs: int, workers: int) -> None:
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import default_loader

    torch.set_num_threads(1)
    torch.manual_seed(0)
    normalize = transforms.Normalize(mean, std)
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                   normalize])
    val_tf = transforms.Compose([transforms.ToTensor(), normalize])

    class Files(ImageFolder):  # an ImageFolder over a given list of its files
        def __init__(self, samples, transform):
            self.samples, self.targets = samples, [label for _, label in samples]
            self.transform, self.target_transform = transform, None
            self.loader, self.classes = default_loader, classes

    train = DataLoader(Files(train_files, train_tf), batch_size=config["batch_size"],
                       shuffle=True, num_workers=workers, drop_last=True)
    val = DataLoader(Files(val_files, val_tf), batch_size=256, num_workers=workers)
    model = build_model("resnet18", len(classes), 3, width=config["width"])
    optimizer = make_optimizer("sgd", model.parameters(), config["lr"], 0.9,
                               config["weight_decay"], False)
    schedule = make_schedule("cosine", optimizer, max_epochs,
                             steps_per_epoch(len(train_files), config["batch_size"]), 0)
    start_epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "checkpoint.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"]
    for epoch in range(start_epoch + 1, max_epochs + 1):
        model.train()
        began, images = time.perf_counter(), 0
        for inputs, labels in train:
            optimizer.zero_grad()
            loss = classification_loss(model(inputs), labels, 0.0)
            loss.backward()
            optimizer.step()
            schedule.step()
            images += len(labels)
        train_seconds = time.perf_counter() - began
        model.eval()
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for inputs, labels in val:
                logits = model(inputs)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(1) == labels).sum())
                total += len(labels)
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "epoch": epoch},
                       Path(folder) / "checkpoint.pt")
            tune.report({"val_acc": correct / total, "val_loss": loss_sum / total,
                         "images_per_s": images / train_seconds, "epoch_seconds": train_seconds},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--subset", type=int, required=True)
    p.add_argument("--val-fraction", type=float, required=True)
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    start = time.perf_counter()
    train_files, val_files, classes = split_files(args.data_dir, args.subset, args.val_fraction,
                                                  args.seed)
    mean, std = mean_std(train_files)
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    trainable = tune.with_resources(tune.with_parameters(
        train_trial, train_files=train_files, val_files=val_files, classes=classes, mean=mean,
        std=std, max_epochs=args.max_epochs, workers=args.workers), {"cpu": 1})
    tuner = tune.Tuner(
        trainable, param_space=search_space(),
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", num_samples=args.num_samples,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=args.max_epochs,
                                    grace_period=args.grace_period,
                                    reduction_factor=args.reduction_factor),
            search_alg=BasicVariantGenerator(random_state=args.seed, max_concurrent=0),
        ),
        run_config=tune.RunConfig(name="usual", storage_path=str(args.storage.resolve()),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  verbose=0),
    )
    grid = tuner.fit()
    wall = time.perf_counter() - start
    ray.shutdown()
    trials = []
    for result in grid:
        history = result.metrics_dataframe
        trials.append({"config": {k: result.config[k] for k in ("lr", "weight_decay")},
                       "epochs": int(len(history)), "best_val_acc": float(history["val_acc"].max()),
                       "images_per_s": [float(v) for v in history["images_per_s"]]})
    args.out.write_text(json.dumps({
        "wall_seconds": wall, "trials": trials, "errors": len(grid.errors),
        "epochs": sum(t["epochs"] for t in trials),
        "best_val_acc": max(t["best_val_acc"] for t in trials),
        "train_images": len(train_files), "val_images": len(val_files),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
