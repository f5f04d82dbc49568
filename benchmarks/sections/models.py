"""Section `models`: a trial of each kind of model trains as fast as its own bare train step.

For the built-in ResNet-18 and two torchvision models at CPU sizes (32x32 CIFAR-10, one thread), a
trial as the trainable sets it up (`core.trial.build_trial`, precision auto, which probes
channels-last on this CPU) against the compute limit of the same model: `core.train.train_step`
alone on one batch kept in memory (harness.StepLimit), in the fastest of the modes that run safely
here (fp32 and, where this CPU has fast bf16, bf16; NCHW, and channels-last where the trial's own
probe passes it). The limit is measured right before and after each trial, which is compared with
their mean: the machine's speed drifts between minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.harness import Context, Report, Section, StepLimit, Table, Target
from core.hparams import resolve
from core.precision import LAYOUTS, Mode, cpu_has_fast_bf16, safe_on_cpu

RESULTS = "RESULTS-models.md"
THREADS = 1
WARMUP_STEPS = 3

# (model, its options): the built-in model at a CPU width, two torchvision models of other shapes
# (mobilenet's depthwise convolutions and squeeze-excitation; regnet's grouped convolutions).
MODELS = (("resnet18", {"width": 0.25}), ("mobilenet_v3_small", {}), ("regnet_y_400mf", {}))

MODEL_TRIAL_VS_LIMIT = Target("each model's trial >= 0.9 of its fastest safe mode's limit", ">=",
                              0.90)


@dataclass(frozen=True)
class Sizes:
    batch: int
    subset: int  # CIFAR-10 train images of each trial
    epochs: int  # timed epochs, after one warm-up epoch
    limit_steps: int  # timed steps of each limit


FULL = Sizes(batch=128, subset=5_000, epochs=2, limit_steps=20)
QUICK = Sizes(batch=16, subset=128, epochs=1, limit_steps=2)


def _hparams(sizes: Sizes, options: dict) -> dict:
    return resolve({"batch_size": sizes.batch, "lr": 0.05, **options})


def model_spec_of(name: str, options: dict) -> dict:
    """The model spec a trial of `name` with `options` (on 10 classes, 3 channels, unpruned)
    builds, as the layout probe keys it."""
    from core.models import MODEL_OPTIONS
    from core.trial import model_spec

    hp = resolve(options)
    return model_spec(name, 10, 3, prune_ratio=0.0, prune_method="unstructured",
                      given=list(options), **{k: hp[k] for k in MODEL_OPTIONS})


def safe_modes(name: str, options: dict, batch: int) -> list[Mode]:
    """The modes a trial of this model may train in here: fp32 (and bf16 where it is native),
    NCHW, and channels-last where the trial's own probe passes it."""
    precisions = ("fp32", "bf16") if cpu_has_fast_bf16() else ("fp32",)
    modes = []
    for precision in precisions:
        for layout in LAYOUTS:
            mode = safe_on_cpu(Mode(precision, layout), model_spec_of(name, options), (3, 32, 32), batch,
                               THREADS)
            if mode.layout == layout:
                modes.append(mode)
    return modes


def limit(sizes: Sizes, name: str, options: dict, mode: Mode,
          device: torch.device = torch.device("cpu")) -> dict:
    if device.type == "cpu":
        torch.set_num_threads(THREADS)
    bench = StepLimit(device, _hparams(sizes, options), mode, model_name=name, options=options)
    bench.run(WARMUP_STEPS)
    return {"precision": mode.precision, "layout": mode.layout,
            **bench.images_per_s(sizes.limit_steps)}


def trial(data, sizes: Sizes, name: str, options: dict,
          device: torch.device = torch.device("cpu")) -> dict:
    from core.trial import build_trial

    if device.type == "cpu":
        torch.set_num_threads(THREADS)
    t = build_trial(data, device, model_name=name, max_epochs=1 + sizes.epochs,
                    model_options=list(options), **_hparams(sizes, options))
    results = [t.run_epoch(epoch) for epoch in range(1, 2 + sizes.epochs)]
    timed = [r.stats for r in results[1:]]
    images, seconds = sum(s.images for s in timed), sum(s.seconds for s in timed)
    return {"precision": t.mode.precision, "layout": t.mode.layout, "why": t.mode.why,
            "images": images, "seconds": seconds, "images_per_s": images / seconds}


def run_models(ctx: Context) -> list[dict]:
    from benchmarks.sections.throughput import _load

    data, _ = _load(ctx.data_dir, ctx.sizes.subset)
    return measure_models(data, ctx.sizes, torch.device("cpu"))


def measure_models(data, sizes: Sizes, device: torch.device) -> list[dict]:
    """Each model's trial on `data` against its fastest safe mode's limit, paired before and after
    (on a GPU every mode is safe: no probe)."""
    rows = []
    for name, options in MODELS:
        modes = (safe_modes(name, options, sizes.batch) if device.type == "cpu" else
                 [Mode(p, layout) for p in ("fp32", "bf16") for layout in LAYOUTS])
        fastest = max((limit(sizes, name, options, m, device) for m in modes),
                      key=lambda r: r["images_per_s"])
        mode = Mode(fastest["precision"], fastest["layout"])
        before = limit(sizes, name, options, mode, device)
        measured = trial(data, sizes, name, options, device)
        after = limit(sizes, name, options, mode, device)
        rows.append({"model": name, "options": options, "safe_modes": [str(m) for m in modes],
                     "fastest": fastest, "before": before, "trial": measured, "after": after})
        print(f"  {name}: trial {measured['images_per_s']:.0f} images/s, limit "
              f"{before['images_per_s']:.0f} / {after['images_per_s']:.0f}", flush=True)
    return rows


def report_models(r: dict) -> Report:
    return models_report(r["models"], "Models: a trial of each kind against its bare train step",
                         "One thread, SGD, batch as in the sizes.")


def models_report(measured: list[dict], title: str, where: str) -> Report:
    rows, verdicts = [], []
    for m in measured:
        around = (m["before"]["images_per_s"] + m["after"]["images_per_s"]) / 2
        share = m["trial"]["images_per_s"] / around
        options = ", ".join(f"{k} {v}" for k, v in m["options"].items()) or "-"
        rows.append([m["model"], options, ", ".join(m["safe_modes"]),
                     f"{m['fastest']['precision']} {m['fastest']['layout']}",
                     f"{m['trial']['precision']} {m['trial']['layout']}",
                     m["trial"]["images_per_s"], around, f"{share:.2f}"])
        verdicts.append(MODEL_TRIAL_VS_LIMIT.check(
            share, f"{share:.2f} ({m['trial']['images_per_s']:.0f} / {around:.0f})",
            f"{m['model']}: trial >= 0.9 of its fastest safe mode's limit"))
    return Report(title, [
        "Each model trained as a trial (`core.trial.build_trial` with precision auto, which on a "
        "CPU probes channels-last; training alone, train_epoch's own clock, after a warm-up "
        "epoch) on CIFAR-10 32x32, and the same model's train step alone on one batch in memory "
        "in the fastest mode that runs safely here, measured right before and after the trial "
        f"(the limit column is their mean). {where}",
        Table(["model", "options", "safe modes", "fastest", "trial's mode", "trial images/s",
               "limit images/s", "trial / limit"], rows)], verdicts)


SECTIONS = (
    Section("models", "a trial of resnet18 and two torchvision models against their bare step",
            RESULTS, run_models, report_models, (MODEL_TRIAL_VS_LIMIT,), FULL, QUICK,
            ("data_dir",)),
)
