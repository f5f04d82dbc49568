"""Metric names the trainable reports after every epoch (cheap to import: no torch, no Ray)."""

# The key of a result that counts its epochs: Ray's count of a trial's reports, which the
# trainable makes once per epoch (in result.json, ASHA's time_attr, an MLflow step).
EPOCH = "training_iteration"

METRICS = (
    "train_loss", "val_loss", "val_acc", "lr", "sparsity", "epoch_seconds", "images_per_s",
    # what the model would cost to run as it is after the epoch (core/cost.py)
    "params", "macs", "latency_ms", "latency_ms_gpu",
)
