"""Metric names the trainable reports after every epoch (cheap to import: no torch, no Ray)."""

METRICS = (
    "train_loss", "val_loss", "val_acc", "lr", "sparsity", "epoch_seconds", "images_per_s",
    # what the model would cost to run as it is after the epoch (core/cost.py)
    "params", "macs", "latency_ms", "latency_ms_gpu",
)
