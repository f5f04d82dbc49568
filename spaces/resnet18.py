"""ResNet-18 on CIFAR-10, sized for GPUs: 32 trials of up to 30 epochs, four trials per GPU."""

from ray import tune

settings = {
    "dataset": "cifar10",  # point --data-dir at a copy (train/<class>/, test/<class>/)
    "model": "resnet18",
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 32,
    "max_epochs": 30,
    "grace_period": 3,  # ASHA judges a trial only after 3 epochs
    "reduction_factor": 3,  # keep the best third at each rung
    "search": "optuna",  # TPE learns from finished trials
    "gpus_per_trial": 0.25,  # a ResNet-18 on 32x32 images uses a quarter of a modern GPU
    "cpus_per_trial": 2,
}

space = {
    "optimizer": tune.choice(["sgd", "adamw"]),
    "lr": tune.loguniform(1e-3, 0.4),  # sgd likes 0.05-0.4, adamw 1e-3-1e-2
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": tune.loguniform(1e-5, 5e-3),
    "schedule": tune.choice(["cosine", "onecycle", "multistep"]),
    "warmup_epochs": tune.choice([0, 2]),
    "dropout": tune.uniform(0.0, 0.3),
    "mixup_alpha": tune.choice([0.0, 0.2, 0.4]),  # 0 turns Mixup off
    "label_smoothing": tune.uniform(0.0, 0.2),  # airbench trains CIFAR-10 with 0.2
    "prune_ratio": tune.choice([0.0, 0.5]),
    "activation": tune.choice(["relu", "gelu"]),
    "batch_size": 256,
}

# --quick: a real search that finishes in minutes on 2 CPU cores.
quick = {
    "num_samples": 8,
    "max_epochs": 4,
    "grace_period": 1,
    "reduction_factor": 2,
    "subset": 3000,  # training images (and 600 test images)
    "search": "random",
    "gpus_per_trial": 0,
    "cpus_per_trial": 1,
    "width": 0.125,  # 8..64 channels
    "batch_size": 64,
}
