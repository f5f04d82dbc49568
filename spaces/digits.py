"""ResNet-18 on scikit-learn's bundled 8x8 digits: runs anywhere, in a minute or two on a CPU."""

from ray import tune

settings = {
    "dataset": "digits",  # ships with scikit-learn: no download, no data folder
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 8,
    "max_epochs": 6,
    "grace_period": 2,  # every trial gets 2 epochs before ASHA may stop it
    "reduction_factor": 2,
    "search": "random",
    "cpus_per_trial": 1,
}

space = {
    "optimizer": tune.choice(["sgd", "adamw"]),
    "lr": tune.loguniform(1e-3, 3e-1),
    "weight_decay": tune.loguniform(1e-5, 1e-2),
    "schedule": tune.choice(["cosine", "onecycle"]),
    "label_smoothing": tune.uniform(0.0, 0.2),
    "width": 0.25,  # 16..128 channels: 8x8 images need no more
    "batch_size": 64,
}

quick = {"num_samples": 4, "max_epochs": 3, "grace_period": 1}
