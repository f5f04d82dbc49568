"""ResNet-18 on CIFAR-10, accuracy against latency: which width and how much channel pruning buy
the most accuracy for each millisecond. The search finds the Pareto front; `--max-latency-ms X`
picks the most accurate model within a budget."""

from ray import tune

settings = {
    "dataset": "cifar10",  # point --data-dir at a copy (train/<class>/, test/<class>/)
    "model": "resnet18",
    # First objective: what ASHA ranks by. latency_ms: batch 1, one CPU thread, fp32, measured
    # on each trial's final model (core/cost.py).
    "objectives": {"val_acc": "max", "latency_ms": "min"},
    # Rungs rank by Pareto rank, not accuracy alone: a fast, less accurate trial goes on too, or
    # only the widest models would ever finish and the front would be one point.
    "promote_by": "pareto",
    "num_samples": 48,  # a front needs more trials than a single winner
    "max_epochs": 30,
    "grace_period": 3,
    "reduction_factor": 3,
    "search": "optuna",  # multi-objective TPE; only trials that ran all epochs teach it
    "gpus_per_trial": 0.25,
    "cpus_per_trial": 2,
}

space = {
    # What moves latency: the width, and channels removed as training goes.
    "width": tune.choice([0.25, 0.5, 0.75, 1.0]),
    "prune_method": "channel",  # whole channels go: the model gets smaller and faster
    "prune_ratio": tune.choice([0.0, 0.25, 0.5, 0.75]),  # of the conv weights, by 75 % of epochs
    # What moves accuracy at a given size: the regularisation that a smaller model needs less of.
    "optimizer": "sgd",
    "lr": tune.loguniform(0.02, 0.4),
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": tune.loguniform(1e-5, 5e-3),
    "schedule": "onecycle",
    "dropout": tune.uniform(0.0, 0.3),
    "mixup_alpha": tune.choice([0.0, 0.2]),
    "label_smoothing": tune.uniform(0.0, 0.2),  # airbench trains CIFAR-10 with 0.2
    "batch_size": 256,
}

# --quick: a real multi-objective search in minutes on 2 CPU cores.
quick = {
    "num_samples": 20,
    "max_epochs": 4,
    "grace_period": 1,
    "reduction_factor": 2,
    "subset": 3000,  # training images (and 600 test images)
    "search": "random",
    "gpus_per_trial": 0,
    "cpus_per_trial": 1,
    "width": tune.choice([0.0625, 0.125, 0.25]),
    "batch_size": 64,
}
