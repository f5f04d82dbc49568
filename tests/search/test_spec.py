"""The space file at the door: a bad file, hyperparameter or setting exits with code 2 and one
line naming the file, field or flag; nothing is created."""

from __future__ import annotations

import pytest

from search.door.spec import SETTINGS
from tests.search.conftest import refuse_space_file, space_file

# (id, space file text or None for a missing file, extra CLI flags, fragments the error must name)
BAD_SPACE_FILES = [
    ("syntax-error", "from ray import tune\nspace = {'lr': 0.1\n", [], ["bad.py:", "syntax error"]),
    ("import-error", space_file(head="import not_a_module"), [], ["bad.py:2", "not_a_module"]),
    ("raises", space_file(head="x = 1 / 0"), [], ["bad.py:2", "ZeroDivisionError"]),
    ("no-space", "from ray import tune\nsettings = {}\n", [], ["no `space` dict"]),
    ("space-not-dict", space_file(space="[1, 2]"), [], ["`space` must be a dict"]),
    ("settings-not-dict", space_file(settings="3"), [], ["`settings` must be a dict"]),
    ("no-dimension", space_file(space='{"lr": 0.1}'), [], ["space:", "no search dimension"]),
    ("unknown-hparam", space_file(space='{"learning_rate": tune.uniform(0.1, 0.2)}'), [],
     ["space.learning_rate", "unknown hyperparameter"]),
    ("misspelled-choice",
     space_file(space='{"optimizer": tune.choice(["sgd", "admaw"])}'), [],
     ["space.optimizer", "'admaw'", "did you mean 'adamw'"]),
    ("unknown-choice", space_file(space='{"optimizer": tune.choice(["sgd", "lion"])}'), [],
     ["space.optimizer", "'lion'", "adamw"]),
    ("fixed-unknown-choice",
     space_file(space='{"activation": "swish", "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.activation", "'swish'"]),
    ("wrong-type", space_file(space='{"lr": "fast", "dropout": tune.uniform(0, 0.5)}'), [],
     ["space.lr", "must be a number"]),
    ("lr-zero", space_file(space='{"lr": tune.uniform(0.0, 0.1)}'), [], ["space.lr", "(0, 10]"]),
    ("lr-negative-fixed", space_file(space='{"lr": -0.1, "dropout": tune.uniform(0, 0.5)}'), [],
     ["space.lr"]),
    ("dropout-one", space_file(space='{"dropout": 1.0, "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.dropout", "[0, 1)"]),
    ("dropout-range", space_file(space='{"dropout": tune.uniform(0.0, 1.5)}'), [],
     ["space.dropout"]),
    ("label-smoothing-negative", space_file(space='{"label_smoothing": tune.uniform(-0.1, 0.1)}'),
     [], ["space.label_smoothing"]),
    ("prune-ratio-one", space_file(space='{"prune_ratio": tune.choice([0.0, 1.0])}'), [],
     ["space.prune_ratio"]),
    ("mixup-negative", space_file(space='{"mixup_alpha": tune.choice([-1.0, 0.2])}'), [],
     ["space.mixup_alpha"]),
    ("batch-size-float-range", space_file(space='{"batch_size": tune.uniform(16, 64)}'), [],
     ["space.batch_size", "tune.randint"]),
    ("width-zero", space_file(space='{"width": tune.choice([0.0, 0.5])}'), [], ["space.width"]),
    ("warmup-too-long",
     space_file(space='{"warmup_epochs": 5, "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.warmup_epochs", "max_epochs"]),
    ("hparam-in-settings", space_file(settings='{"lr": 0.1}'), [],
     ["settings.lr", "put it in `space`"]),
    ("unknown-setting", space_file(settings='{"num_sample": 4}'), [],
     ["settings.num_sample", "did you mean 'num_samples'"]),
    ("metric-never-reported", space_file(settings='{"metric": "accuracy"}'), [],
     ["settings.metric", "val_acc"]),
    ("bad-mode", space_file(settings='{"mode": "maximize"}'), [], ["settings.mode", "'max'"]),
    ("grace-beyond-max-epochs", space_file(settings='{"max_epochs": 3, "grace_period": 5}'), [],
     ["settings.grace_period", "max_epochs"]),
    ("objectives-not-dict", space_file(settings='{"objectives": ["val_acc", "latency_ms"]}'), [],
     ["settings.objectives", "must be a dict"]),
    ("objectives-empty", space_file(settings='{"objectives": {}}'), [],
     ["settings.objectives", "at least one metric"]),
    ("objective-never-reported", space_file(settings='{"objectives": {"val_acc": "max", "latency": "min"}}'),
     [], ["settings.objectives", "'latency'", "did you mean 'latency_ms'"]),
    ("objective-bad-mode", space_file(settings='{"objectives": {"val_acc": "maximize"}}'), [],
     ["settings.objectives.val_acc", "'max' or 'min'"]),
    ("objectives-contradict-metric",
     space_file(settings='{"metric": "val_loss", "objectives": {"val_acc": "max", "latency_ms": "min"}}'),
     [], ["settings.metric", "first objective", "val_acc"]),
    ("promote-by-pareto-one-objective", space_file(settings='{"promote_by": "pareto"}'), [],
     ["settings.promote_by", "several objectives"]),
    ("promote-by-pareto-stopping-asha",
     space_file(settings='{"promote_by": "pareto", "scheduler": "asha_stopping", '
                         '"objectives": {"val_acc": "max", "latency_ms": "min"}}'),
     [], ["settings.promote_by", "scheduler 'asha'"]),
    ("max-latency-negative", space_file(settings='{"max_latency_ms": -5}'), [],
     ["settings.max_latency_ms", "(0, inf]"]),
    ("max-latency-flag-zero", space_file(), ["--max-latency-ms", "0"], ["--max-latency-ms"]),
    ("unknown-prune-method", space_file(space='{"prune_method": "filter", "lr": tune.uniform(0.1, 0.2)}'),
     [], ["space.prune_method", "'filter'", "channel"]),
    ("zero-trials", space_file(settings='{"num_samples": 0}'), [], ["settings.num_samples"]),
    ("negative-trials", space_file(settings='{"num_samples": -4}'), [], ["settings.num_samples"]),
    ("unknown-search", space_file(settings='{"search": "bayes"}'), [],
     ["settings.search", "'optuna'"]),
    ("grid-with-optuna",
     space_file(settings='{"search": "optuna"}', space='{"lr": tune.grid_search([0.1, 0.2])}'),
     [], ["space.lr", "grid_search"]),
    ("name-with-path", space_file(settings='{"name": "../x"}'), [], ["settings.name", "no path"]),
    ("missing-file", None, [], ["no such space file"]),
    # A space file that ends the interpreter while being loaded
    ("sys-exit-0", space_file(head="raise SystemExit(0)"), [],
     ["bad.py:2", "ends the program", "exit code 0"]),
    ("os-exit", space_file(head="import os\nos._exit(3)"), [],
     ["bad.py:3", "ends the program", "exit code 3"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("case_id,text,flags,fragments", BAD_SPACE_FILES, ids=[c[0] for c in BAD_SPACE_FILES])
def test_bad_space_file_is_refused(case_id, text, flags, fragments, workdir, capsys):
    refuse_space_file(text, flags, fragments, workdir, capsys, missing=case_id == "missing-file")


def test_the_first_objective_is_the_metric_of_early_stopping(tmp_path):
    from pathlib import Path

    from ray import tune

    from search.door.spec import build_spec

    objectives = {"latency_ms": "min", "val_acc": "max"}
    spec = build_spec(Path("s.py"), {"objectives": objectives, "max_latency_ms": 4},
                      {"lr": tune.uniform(0.1, 0.2)})
    assert (spec.metric, spec.mode) == ("latency_ms", "min")
    assert spec.objectives == objectives and spec.max_latency_ms == 4
    same = build_spec(Path("s.py"), {"objectives": objectives, "metric": "latency_ms"},
                      {"lr": tune.uniform(0.1, 0.2)})
    assert same.metric == "latency_ms"  # saying it twice is no contradiction


def _whole_float(h) -> float:
    """A whole number inside the range of integer setting `h`, written as a float."""
    low = h.low + 1 if h.low_open else h.low
    return float(max(low, min(h.high, 2)))


@pytest.mark.parametrize("name", [n for n, h in SETTINGS.items() if h.kind is int])
def test_a_whole_float_of_an_integer_setting_is_taken_as_that_int(name):
    # The rule, for every integer setting of the table alike: 3000.0 is 3000 (as num_samples 8.0
    # always was); 2.5 is refused at the door (test_spec_properties).
    from pathlib import Path

    from ray import tune

    from search.door.spec import build_spec

    value = _whole_float(SETTINGS[name])
    settings = {"max_epochs": 4} | {name: value}
    spec = build_spec(Path("s.py"), settings, {"lr": tune.uniform(0.1, 0.2)})
    assert spec.settings[name] == value and type(spec.settings[name]) is int


def test_subset_as_a_float_reaches_the_search_as_an_int(workdir, capsys):
    # subset 3000.0 once passed the door and failed in core/data.py's slice (exit 1).
    from search.cli import main

    (workdir / "s.py").write_text(space_file(
        settings='{"dataset": "digits", "num_samples": 2, "max_epochs": 2, "subset": 3000.0}'))
    assert main(["s.py", "--dry-run"]) == 0
    assert "3000 training images" in capsys.readouterr().out
