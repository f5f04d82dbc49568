"""The console: plain lines without a terminal, a live view on one, rung decisions from the scheduler."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

from ray.tune.experiment import Trial

from search.console import SearchConsole
from search.scheduling.promotion import PromotionASHA

METRIC = "val_acc"


def _trial(index: int, status: str = Trial.RUNNING) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"abc_{index:05d}", status=status, last_result={}, path=None,
                           config={"optimizer": "sgd", "lr": 0.03}, error_file=None, error_msg="")


class _Controller:
    """What PromotionASHA asks of Ray's controller; stopping a trial tells the callbacks, as Ray's does."""

    def __init__(self, trials, console):
        self.trials, self.console = trials, console
        self.search_alg = SimpleNamespace(is_finished=lambda: True)

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        trial.status = Trial.TERMINATED
        self.console.on_trial_complete(0, self.trials, trial)

    def _mark_trial_to_checkpoint(self, trial):
        pass


def _report(scheduler, controller, console, trial, epoch, value):
    result = {"training_iteration": epoch, METRIC: value, "images_per_s": 1000.0}
    trial.last_result = result
    decision = scheduler.on_trial_result(controller, trial, result)  # Ray: scheduler, then callbacks
    console.on_trial_result(0, controller.trials, trial, result)
    if decision == "PAUSE":
        trial.status = Trial.PAUSED


def _search(stream, live=False):
    console = SearchConsole("s", METRIC, "max", 4, 4, ["optimizer", "lr"], (1, 2), stream=stream,
                            live=live)
    scheduler = PromotionASHA(max_epochs=4, grace_period=1, reduction_factor=2, max_concurrent=2,
                              metric=METRIC, mode="max")
    console.follow(scheduler)
    trials = [_trial(i) for i in range(4)]
    controller = _Controller(trials, console)
    console.setup()
    for trial in trials:
        console.on_trial_start(0, trials, trial)
    for trial, value in zip(trials, (0.3, 0.5, 0.1, 0.4)):
        _report(scheduler, controller, console, trial, 1, value)
    console.on_trial_result(0, trials, trials[1], trials[1].last_result)  # again: no new line
    trials[1].status = trials[3].status = Trial.TERMINATED  # as if they ran to the end
    scheduler.choose_trial_to_run(controller)  # nothing runs, nothing comes: the paused ones end
    console.on_experiment_end(trials)
    return stream.getvalue()


def test_plain_lines_tell_each_event_once():
    out = _search(io.StringIO())
    lines = out.splitlines()
    assert lines[0].startswith("search 's': 4 trials x up to 4 epochs (ASHA rungs at epochs 1, 2)")
    assert sum("started" in line for line in lines) == 4
    assert "t00 started: sgd lr=0.03" in out
    # One line per trial and epoch, with the rung's decision taken on that result.
    assert sum(" epoch 1/4" in line for line in lines) == 4
    assert "t00 epoch 1/4: val_acc 0.3, 1000 img/s; rung 1: paused (too few trials" in out
    assert "t01 epoch 1/4: val_acc 0.5, 1000 img/s; rung 1: promoted (at or above the rung's cut 0.5)" \
        in out
    assert "t02 epoch 1/4: val_acc 0.1, 1000 img/s; rung 1: paused (below the rung's cut 0.5)" in out
    # The paused trials that can never be promoted end at the rung, against the cut of 4 trials.
    assert "t00 ended: stopped at epoch 1: val_acc 0.3 below the rung's cut 0.4" in out
    assert "t02 ended: stopped at epoch 1: val_acc 0.1 below the rung's cut 0.4" in out
    assert "search ended: 4 of 4 trials ended (2 stopped early in this run)" in lines[-1]
    assert "best t01 val_acc 0.5" in lines[-1]
    assert "\x1b" not in out  # no terminal codes in a log file


def test_an_error_is_one_line_with_the_path_of_the_full_log():
    stream = io.StringIO()
    console = SearchConsole("s", METRIC, "max", 1, 4, [], (), stream=stream, live=False)
    trial = _trial(7, Trial.ERROR)
    trial.error_msg, trial.error_file = "Traceback...\nValueError: bad lr", "/r/t07/error.txt"
    console.on_trial_error(0, [trial], trial)
    assert stream.getvalue().splitlines()[-1].endswith(
        "t07 ended: error: ValueError: bad lr (full log: /r/t07/error.txt)")


def test_a_terminal_gets_a_live_view_with_progress_and_the_best_trial():
    out = _search(io.StringIO(), live=True)
    assert "4/16" in out  # epochs trained, of at most 4 trials x 4 epochs
    assert "best so far: t01 val_acc 0.5 at epoch 1" in out
    assert "t00 ended: stopped at epoch 1" in out


def test_ray_can_pickle_it_with_the_tuner():
    console = SearchConsole("s", METRIC, "max", 4, 4, [], (1, 2), stream=io.StringIO())
    console.follow(PromotionASHA(max_epochs=4, grace_period=1, reduction_factor=2, max_concurrent=2))
    copy = pickle.loads(pickle.dumps(console))
    assert copy.total_trials == 4 and copy._scheduler is None
