"""TrialOutcome: one trial's end, said the same way in its MLflow tags, the console and its description."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import tune
from ray.tune.experiment import Trial

from search.record.outcome import KINDS, TrialOutcome, outcome_kind
from trainables.metrics import EPOCH

METRIC = "val_acc"
RUNGS = (1, 2)  # ASHA's rung epochs of a 4-epoch search, grace period 1, reduction factor 2


def _trial(status: str = Trial.TERMINATED, last: dict | None = None, error_msg: str = "",
           error_file: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id="abc_00003", status=status, last_result=last or {}, path=None,
                           config={"lr": 0.01}, error_msg=error_msg, error_file=error_file)


def _epoch(epoch: int, value: float = 0.5, **more) -> dict:
    return {EPOCH: epoch, METRIC: value, **more}


CASES = {  # name -> the outcome, and what each rendering of it must say
    "completed": (TrialOutcome.ended(_epoch(4, 0.8), 4, RUNGS),
                  ["4"], "completed 4 epochs, val_acc 0.8", "**Completed** all 4 epochs."),
    "stopped at a rung": (TrialOutcome.ended(_epoch(2), 4, RUNGS),
                          ["2"], "stopped at rung 2 (epoch 2), val_acc 0.5",
                          "**Stopped by ASHA at rung 2** (epoch 2)"),
    "stopped off the rungs": (TrialOutcome.ended(_epoch(3), 4, RUNGS),
                              ["3"], "stopped at epoch 3, val_acc 0.5", "**Stopped early** at epoch 3."),
    "stopped with no epoch": (TrialOutcome.ended({}, 4, RUNGS),  # the description says "no epoch"
                              [], "stopped at epoch 0", "**Stopped** with no epoch on record."),
    "diverged": (TrialOutcome.ended(_epoch(2, 0.0, diverged=1, train_loss=float("nan")), 4, RUNGS),
                 ["2", "nan"], "diverged at epoch 2 (train_loss nan)",
                 "**Diverged**: the training loss became nan at epoch 2"),
    "error": (TrialOutcome.errored(_trial(Trial.ERROR, _epoch(1), "Traceback\nValueError: bad lr",
                                          "/r/t03/error.txt")),
              ["ValueError: bad lr"], "error: ValueError: bad lr (full log: /r/t03/error.txt)",
              "**Failed** at epoch 2 with an error: `ValueError: bad lr`. Full log: `/r/t03/error.txt`."),
    "interrupted": (TrialOutcome.interrupted(_epoch(1)),
                    [], "interrupted after 1 epochs", "**Interrupted** after 1 epochs, before it ended"),
}


def test_the_cases_cover_every_kind():
    assert {outcome.kind for outcome, *_ in CASES.values()} == set(KINDS)


@pytest.mark.parametrize("name", list(CASES))
def test_each_outcome_says_the_same_in_its_tags_its_console_line_and_its_description(name):
    # The kind is the status tag; the figures that explain it (epoch, rung, loss, error) are in all three.
    outcome, figures, console, description = CASES[name]
    tags, line, said = outcome.tags, outcome.console_text(METRIC), outcome.description(METRIC)
    assert tags["tune_run.status"] == outcome.kind
    assert line.startswith(console)
    assert said.startswith(description)
    for figure in figures:
        assert any(figure in value for value in tags.values()), (figure, tags)
        assert figure in line and figure in said


def test_a_trial_stopped_at_a_rung_names_the_rung_and_the_epoch_everywhere():
    outcome = TrialOutcome.ended(_epoch(2), 4, RUNGS)
    assert (outcome.kind, outcome.epochs, outcome.rung) == ("stopped_early", 2, 2)
    assert outcome.tags == {"tune_run.epochs": "2", "tune_run.stopped_at_rung": "2",
                            "tune_run.status": "stopped_early", "tune_run.stopped_at_epoch": "2"}
    assert "rung 2 (epoch 2)" in outcome.console_text(METRIC)
    assert "rung 2** (epoch 2)" in outcome.description(METRIC)


def test_the_rung_decision_says_why_in_the_console_and_the_description():
    outcome = TrialOutcome.ended(_epoch(1, 0.3), 4, RUNGS)
    why = "val_acc 0.3 below the rung's cut 0.4"
    assert outcome.console_text(METRIC, why) == f"stopped at epoch 1: {why}"
    assert outcome.description(METRIC, why=why) == f"**Stopped by ASHA at rung 1** (epoch 1): {why}."


def test_the_mlflow_status_is_finished_failed_or_killed():
    status = {name: case[0].run_status for name, case in CASES.items()}
    assert status == {"completed": "FINISHED", "stopped at a rung": "FINISHED",
                      "stopped off the rungs": "FINISHED", "stopped with no epoch": "FINISHED",
                      "diverged": "FAILED", "error": "FAILED", "interrupted": "KILLED"}


def test_only_what_explains_the_end_is_tagged():
    # An error or an interruption leaves the epochs tag as the epochs logged it; a stopped trial's
    # rung is tagged only when it stopped at one.
    assert CASES["error"][0].tags == {"tune_run.status": "error", "tune_run.failure": "ValueError: bad lr"}
    assert CASES["interrupted"][0].tags == {"tune_run.status": "interrupted"}
    assert "tune_run.stopped_at_rung" not in CASES["stopped off the rungs"][0].tags


def test_the_best_epoch_and_the_resume_command_are_in_the_description():
    best = _epoch(3, 0.9)
    assert CASES["completed"][0].description(METRIC, best).endswith(
        " Its best val_acc was 0.9 at epoch 3.")
    said = CASES["interrupted"][0].description(METRIC, resume="tune-run --resume s --storage r")
    assert "; `tune-run --resume s --storage r` continues it from its last checkpoint." in said


def test_an_error_is_its_last_line_shortened_on_the_console_not_in_the_tag():
    outcome = TrialOutcome.errored(_trial(Trial.ERROR, error_msg="Traceback\n" + "x" * 600))
    assert len(outcome.tags["tune_run.failure"]) == 500
    assert outcome.console_text(METRIC) == "error: " + "x" * 200
    assert TrialOutcome.errored(_trial(Trial.ERROR)).failure == "unknown error"


def test_the_error_file_is_read_when_ray_kept_no_message(tmp_path):
    log = tmp_path / "error.txt"
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n")
    outcome = TrialOutcome.errored(_trial(Trial.ERROR, error_file=str(log)))
    assert outcome.failure == "RuntimeError: CUDA out of memory"
    assert outcome.log == str(log)


@pytest.mark.parametrize("status, last, kind", [
    (Trial.TERMINATED, _epoch(4), "completed"),
    (Trial.TERMINATED, _epoch(2), "stopped_early"),
    (Trial.TERMINATED, _epoch(2, diverged=1), "diverged"),
    (Trial.ERROR, _epoch(2), "error"),
    (Trial.PAUSED, _epoch(1), "interrupted"),  # paused at a rung when the search ended
    (Trial.RUNNING, _epoch(1), "interrupted"),
    (Trial.PENDING, {}, "interrupted"),
])
def test_ray_s_status_decides_the_kind(status, last, kind):
    assert outcome_kind(status, last, 4) == kind
    assert TrialOutcome.of(_trial(status, last), last, 4, RUNGS).kind == kind


def test_an_unknown_kind_is_refused_with_the_kinds_allowed():
    with pytest.raises(ValueError, match="completed, stopped_early, diverged, error, interrupted"):
        TrialOutcome("paused", 1)


# --- the four places that tell an outcome use it ------------------------------------------------

class _Record:
    """What MlflowTracking asks of a SearchRecord when a trial ends."""

    def __init__(self):
        self.ended: dict[str, TrialOutcome] = {}

    def child(self, trial_id, run_name, params):
        return f"run-{trial_id}"

    def end_trial(self, run_id, outcome):
        self.ended[run_id] = outcome


def test_the_record_the_console_and_the_report_tell_a_trial_stopped_at_a_rung_alike():
    from search.console import SearchConsole
    from search.door.spec import build_spec
    from search.record.tracking import MlflowTracking
    from search.report.leaderboard import leaderboard_rows, rung_cuts, trial_description

    history = [_epoch(1, 0.6), _epoch(2, 0.5)]
    trial = _trial(last=history[-1])
    tracking = MlflowTracking(None, "e", "k", "s", 4, ["lr"], RUNGS)
    tracking.record = record = _Record()
    tracking.on_trial_complete(0, [trial], trial)
    stream = io.StringIO()
    console = SearchConsole("s", METRIC, "max", 1, 4, ["lr"], RUNGS, stream=stream, live=False)
    console.on_trial_complete(0, [trial], trial)
    spec = build_spec(Path("s.py"), {"max_epochs": 4, "grace_period": 1, "reduction_factor": 2},
                      {"lr": tune.loguniform(1e-4, 1e-1)})
    histories = [(trial, history)]
    said = trial_description(spec, trial, history, rung_cuts(spec, histories))

    outcome = record.ended["run-abc_00003"]
    assert outcome == TrialOutcome.ended(history[-1], 4, RUNGS)
    assert outcome.tags["tune_run.stopped_at_rung"] == "2"
    assert stream.getvalue().rstrip().endswith("t03 ended: stopped at rung 2 (epoch 2), val_acc 0.5")
    assert said.startswith("**Stopped by ASHA at rung 2** (epoch 2): ")
    assert leaderboard_rows(spec, histories)[0]["status"] == outcome.kind


def test_the_console_tells_an_error_as_the_outcome_does():
    from search.console import SearchConsole

    stream = io.StringIO()
    console = SearchConsole("s", METRIC, "max", 1, 4, [], (), stream=stream, live=False)
    trial = _trial(Trial.ERROR, error_msg="Traceback\nValueError: bad lr", error_file="/r/t03/error.txt")
    console.on_trial_error(0, [trial], trial)
    assert stream.getvalue().rstrip().endswith(
        "t03 ended: " + TrialOutcome.errored(trial).console_text(METRIC))


def test_an_outcome_is_built_once_for_the_console_and_the_record_and_kept_for_the_report(tmp_path):
    from search.console import SearchConsole
    from search.record.outcome import OUTCOME_FILE, TrialEnds, outcome_of
    from search.record.tracking import MlflowTracking

    trial = _trial(last=_epoch(2))
    trial.local_path = trial.path = str(tmp_path)
    ends = TrialEnds(4, RUNGS)
    tracking = MlflowTracking(None, "e", "k", "s", 4, ["lr"], RUNGS, ends=ends)
    tracking.record = record = _Record()
    console = SearchConsole("s", METRIC, "max", 1, 4, ["lr"], RUNGS, stream=io.StringIO(),
                            live=False, ends=ends)
    console.on_trial_complete(0, [trial], trial)
    tracking.on_trial_complete(0, [trial], trial)
    assert record.ended["run-abc_00003"] is ends.completed(trial)  # the console's, not a rebuild
    assert (tmp_path / OUTCOME_FILE).exists()
    # The report reads it back; Ray's status says it may (an errored trial's file would not).
    assert outcome_of(trial, {}, 4, RUNGS) == ends.completed(trial)
    trial.status = Trial.ERROR
    assert outcome_of(trial, {}, 4, RUNGS).kind == "error"
    ends.started(trial)  # it runs again: the kept outcome no longer holds
    assert not (tmp_path / OUTCOME_FILE).exists()
