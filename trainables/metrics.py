"""Metric names the trainable reports after every epoch (cheap to import: no torch, no Ray)."""

METRICS = (
    "train_loss", "val_loss", "val_acc", "lr", "sparsity", "epoch_seconds", "images_per_s",
)
