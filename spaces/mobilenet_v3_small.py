"""torchvision's MobileNetV3-Small on CIFAR-10, sized for GPUs: 24 trials of up to 30 epochs, four per GPU."""

from ray import tune

settings = {
    "dataset": "cifar10",  # point --data-dir at a copy (train/<class>/, test/<class>/)
    "model": "mobilenet_v3_small",  # any torchvision classification model, built for 10 classes
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 24,
    "max_epochs": 30,
    "grace_period": 3,  # ASHA judges a trial only after 3 epochs
    "reduction_factor": 3,  # keep the best third at each rung
    "search": "optuna",  # TPE learns from finished trials
    "gpus_per_trial": 0.25,  # 2.5 M parameters on 32x32 images: a quarter of a modern GPU
    "cpus_per_trial": 2,
}

space = {
    "optimizer": tune.choice(["sgd", "adamw"]),
    "lr": tune.loguniform(1e-3, 0.2),  # depthwise nets like smaller sgd steps than a ResNet
    "momentum": 0.9,
    "weight_decay": tune.loguniform(1e-5, 1e-3),  # little: depthwise filters have few weights
    "schedule": tune.choice(["cosine", "onecycle"]),
    "warmup_epochs": tune.choice([0, 2]),
    "dropout": tune.uniform(0.0, 0.4),  # torchvision's own head dropout (its default is 0.2)
    "mixup_alpha": tune.choice([0.0, 0.2]),
    "label_smoothing": tune.uniform(0.0, 0.2),
    "batch_size": 256,
}

# --quick: a real search that finishes in minutes on 2 CPU cores.
quick = {
    "num_samples": 6,
    "max_epochs": 3,
    "grace_period": 1,
    "reduction_factor": 2,
    "subset": 2000,  # training images (and 400 test images)
    "search": "random",
    "gpus_per_trial": 0,
    "cpus_per_trial": 1,
    "batch_size": 64,
}
