"""A model of one's own (spaces/models/tiny.py) on CIFAR-10: 16 trials of up to 20 epochs."""

from ray import tune

settings = {
    "dataset": "cifar10",  # point --data-dir at a copy (train/<class>/, test/<class>/)
    "model": "models/tiny.py:build",  # a file beside this one: build(num_classes, in_channels, ...)
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 16,
    "max_epochs": 20,
    "grace_period": 2,
    "reduction_factor": 3,
    "search": "optuna",
    "cpus_per_trial": 1,
}

space = {
    "optimizer": tune.choice(["sgd", "adamw"]),
    "lr": tune.loguniform(1e-3, 0.3),
    "weight_decay": tune.loguniform(1e-5, 1e-3),
    "schedule": "cosine",
    "dropout": tune.uniform(0.0, 0.3),  # build() names dropout, so it is passed
    "width": tune.choice([0.5, 1.0]),  # and width (16 or 32 channels in the first layer)
    "label_smoothing": tune.uniform(0.0, 0.2),
    "batch_size": 128,
}

# --quick: a real search that finishes in a minute or two on 2 CPU cores.
quick = {
    "num_samples": 6,
    "max_epochs": 3,
    "grace_period": 1,
    "reduction_factor": 2,
    "subset": 2000,
    "search": "random",
    "batch_size": 64,
}
