"""Sections 1-3: training throughput of one trial, in images per second, on the CPU.

1. The compute limit: the train step alone on random tensors already in memory.
2. tune-run's data path: `core.train.train_epoch` with `BatchAugment` on the shared uint8 arrays.
3. The usual Ray Tune PyTorch CIFAR-10 example's data path: a per-trial `ImageFolder` over the JPEG
   files and a `DataLoader` with PIL transforms.

All three train the same model with the same optimizer, loss, batch size and torch threads, so the
only difference between them is where the batches come from.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from core.augment import BatchAugment, crop_padding
from core.data import Dataset, _list_image_folder, _take_list
from core.losses import classification_loss
from core.models import build_model
from core.optim import make_optimizer, make_schedule
from core.precision import Mode, resolve_mode
from core.train import steps_per_epoch, train_epoch

MODEL = "resnet18"
WIDTH = 0.25  # 16..128 channels: a CPU-sized ResNet-18
BATCH = 128
IMAGE = 32  # CIFAR-10's 32x32 pixels
CLASSES = 10
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4  # the project's SGD defaults, but for lr
WARMUP_STEPS = 3  # untimed steps of section 1 (first calls allocate and pick kernels)


def _model_and_optimizer(threads: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(MODEL, CLASSES, 3, width=WIDTH)
    optimizer = make_optimizer("sgd", model.parameters(), LR, MOMENTUM, WEIGHT_DECAY)
    return model, optimizer


def compute_limit(threads: int, steps: int, mode: Mode) -> dict:
    """Images/s of forward, loss, backward and SGD step on one random batch kept in memory, in
    `mode`'s precision (autocast) and layout."""
    model, optimizer = _model_and_optimizer(threads)
    model = model.to(memory_format=mode.memory_format)
    x = torch.randn(BATCH, 3, IMAGE, IMAGE)  # (B, 3, 32, 32), already normalised
    x = x.contiguous(memory_format=mode.memory_format)
    y = torch.randint(0, CLASSES, (BATCH,))
    model.train()
    for i in range(WARMUP_STEPS + steps):
        if i == WARMUP_STEPS:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=mode.autocast_dtype, enabled=mode.autocast_dtype is not None):
            loss = classification_loss(model(x), y, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return {"threads": threads, "precision": mode.precision, "layout": mode.layout, "steps": steps,
            "images": steps * BATCH, "seconds": seconds, "images_per_s": steps * BATCH / seconds}


def tune_run_path(data: Dataset, threads: int, epochs: int) -> dict:
    """Images/s of `train_epoch` over whole epochs of `data.train_x`, after one warm-up epoch.

    Set up as `trainables.classifier.train_classifier` does on a CPU: the uint8 arrays wrapped
    without a copy, the trial's generator, a cosine schedule stepped per optimizer step, and the
    precision and layout that `precision: auto` picks on this CPU.
    """
    mode = resolve_mode("auto", torch.device("cpu"))
    model, optimizer = _model_and_optimizer(threads)
    model = model.to(memory_format=mode.memory_format)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    schedule = make_schedule("cosine", optimizer, 1 + epochs, steps_per_epoch(len(y), BATCH))
    augment = BatchAugment(data.mean, data.std, crop_padding(data.image_size), data.hflip,
                           mode.memory_format)
    generator = torch.Generator("cpu").manual_seed(0)
    stats = [train_epoch(model, x, y, augment, optimizer, schedule, BATCH, 0.0, None, generator,
                         mode.autocast_dtype) for _ in range(1 + epochs)]
    timed = stats[1:]
    images, seconds = sum(s.images for s in timed), sum(s.seconds for s in timed)
    return {"threads": threads, "precision": mode.precision, "layout": mode.layout,
            "epochs": epochs, "train_images": len(y), "images": images,
            "seconds": seconds, "images_per_s": images / seconds,
            "epoch_seconds": [s.seconds for s in timed], "warmup_seconds": stats[0].seconds}


def subset_files(root: Path, n: int, seed: int) -> set[str]:
    """The train files `load_dataset(subset=n, seed=seed)` decodes, chosen by the same code."""
    files, _ = _list_image_folder(root / "train", root)
    return {path for path, _ in _take_list(files, n, seed)}


def baseline_path(root: Path, files: set[str], mean: tuple[float, ...], std: tuple[float, ...],
                  threads: int, epochs: int, workers: int) -> dict:
    """Images/s of the Ray Tune CIFAR-10 example's loop over whole epochs, data loading included.

    As in the example, each trial builds its own `ImageFolder` and a `DataLoader` whose workers
    decode and transform every image with PIL in every epoch (not persistent workers, no
    drop_last). The `ImageFolder` scan is timed apart (`setup_seconds`).
    """
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    model, optimizer = _model_and_optimizer(threads)
    transform = transforms.Compose([
        transforms.RandomCrop(IMAGE, padding=4),
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
    loader = DataLoader(trainset, batch_size=BATCH, shuffle=True, num_workers=workers)
    model.train()
    seconds, images = [], 0
    for epoch in range(1 + epochs):
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
    return {"threads": threads, "workers": workers, "epochs": epochs, "train_images": len(trainset),
            "images": images, "seconds": timed, "images_per_s": images / timed,
            "epoch_seconds": seconds[1:], "warmup_seconds": seconds[0],
            "setup_seconds": setup_seconds}
