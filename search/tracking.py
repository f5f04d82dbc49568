"""The MLflow record of a search: one parent run, one nested child run per trial.

Everything is logged from the driver with MlflowClient, so trials on other machines need no access
to the tracking store. Runs are keyed by tags (the search's experiment folder, the trial id) and
reopened rather than recreated, so interruptions and resumes leave one record, and a step already
logged is never logged again.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from core.hparams import FAULT_KEY, resolve
from trainables.metrics import METRICS

SEARCH_KEY = "tune_run.search_key"  # the experiment folder's absolute path
TRIAL_ID = "tune_run.trial_id"
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"


class SearchRecord:
    """Finds or creates the runs of one search in an MLflow store."""

    def __init__(self, tracking_uri: str | None, experiment: str, search_key: str, name: str):
        import mlflow

        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)
        self.search_key, self.name = search_key, name
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment)
        )
        self.parent_id = self._find_or_create_parent()
        self._children: dict[str, str] = {}  # trial id -> run id
        self._last_step: dict[str, int] = {}  # run id -> last epoch logged

    def _search(self, filter_string: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string, max_results=50000)

    def _find_or_create_parent(self) -> str:
        runs = self._search(f"tags.`{SEARCH_KEY}` = '{_quote(self.search_key)}'")
        runs = [r for r in runs if TRIAL_ID not in r.data.tags]
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.name,
                                     tags={SEARCH_KEY: self.search_key})
        return run.info.run_id

    def child(self, trial_id: str, run_name: str, params: dict[str, Any]) -> str:
        """The run of `trial_id`, reopened if it exists, else created with `params`."""
        if trial_id in self._children:
            return self._children[trial_id]
        runs = self._search(f"tags.`{PARENT}` = '{self.parent_id}' "
                            f"and tags.`{TRIAL_ID}` = '{trial_id}'")
        if runs:
            run_id = runs[0].info.run_id
            self._last_step[run_id] = self._max_step(run_id)
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name,
                tags={PARENT: self.parent_id, TRIAL_ID: trial_id, SEARCH_KEY: self.search_key},
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self._last_step[run_id] = 0
        self._children[trial_id] = run_id
        return run_id

    def _max_step(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, METRICS[0])
        return max((m.step for m in history), default=0)

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float], timestamp_ms: int,
                  tags: dict[str, str] | None = None) -> bool:
        """Logs one epoch's metrics in one batch; False (nothing logged) if `step` was logged."""
        if step <= self._last_step.get(run_id, 0):
            return False
        batch = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch,
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        self._last_step[run_id] = step
        return True

    def delete_children_except(self, trial_ids: set[str]) -> list[str]:
        """Deletes the child runs of trials not in `trial_ids`; returns their trial ids."""
        runs = self._search(f"tags.`{PARENT}` = '{self.parent_id}'")
        orphans = [r for r in runs if r.data.tags.get(TRIAL_ID) not in trial_ids]
        for run in orphans:
            self.client.delete_run(run.info.run_id)
            self._children.pop(run.data.tags.get(TRIAL_ID), None)
        return [r.data.tags.get(TRIAL_ID) for r in orphans]

    def opened(self, trial_id: str) -> str | None:
        """The run id of `trial_id` if this record has opened it."""
        return self._children.get(trial_id)

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def finish(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        """Ends the run with `status` and `tags`; changes nothing when it already has them."""
        run = self.client.get_run(run_id)
        new_tags = {k: v for k, v in (tags or {}).items() if run.data.tags.get(k) != v}
        if new_tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in new_tags.items()])
        if run.info.status != status:
            self.client.set_terminated(run_id, status)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def run_name(trial_id: str, config: dict[str, Any], dimensions: list[str]) -> str:
    """A name a person can scan: 't07 sgd lr=0.031 cosine'."""
    parts = [f"t{_trial_index(trial_id):02d}"]
    for key in dimensions[:4]:
        value = config.get(key)
        if isinstance(value, float):
            parts.append(f"{key}={value:.2g}")
        elif isinstance(value, str):
            parts.append(value)
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _trial_index(trial_id: str) -> int:
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's full hyperparameters, defaults included (what it actually trained with)."""
    return resolve({k: v for k, v in config.items() if k != FAULT_KEY})


class MlflowTracking(Callback):
    """Ray Tune callback logging each trial to its child run, from the driver."""

    def __init__(self, tracking_uri: str | None, experiment: str, search_key: str, name: str,
                 max_epochs: int, dimensions: list[str]):
        self.args = (tracking_uri, experiment, search_key, name)
        self.max_epochs, self.dimensions = max_epochs, dimensions
        self.record: SearchRecord | None = None
        self.unfinished: list[str] = []  # trials left unfinished when the experiment ended

    def __getstate__(self) -> dict:
        # Ray pickles callbacks into its experiment state; the client is rebuilt on restore.
        return {k: v for k, v in self.__dict__.items() if k != "record"} | {"record": None}

    def setup(self, **info) -> None:
        self.record = SearchRecord(*self.args)

    def _run(self, trial: Trial) -> str:
        return self.record.child(trial.trial_id, run_name(trial.trial_id, trial.config,
                                 self.dimensions), trial_params(trial.config))

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.record.reopen(self._run(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict,
                        **info) -> None:
        metrics = epoch_metrics(result)
        tags = {"tune_run.device": str(result["device"])} if "device" in result else None
        timestamp = int(result.get("timestamp", time.time()) * 1000)
        self.record.log_epoch(self._run(trial), int(result["training_iteration"]), metrics,
                              timestamp, tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.record.finish(self._run(trial), *ended_run(trial.last_result or {}, self.max_epochs))

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.record.finish(self._run(trial), *errored_run(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self.unfinished = [t.trial_id for t in trials
                           if t.status not in (Trial.TERMINATED, Trial.ERROR)]
        for trial_id in self.unfinished:
            run_id = self.record.opened(trial_id)
            if run_id:
                self.record.finish(run_id, "KILLED", {"tune_run.status": "interrupted"})


def ended_run(last: dict[str, Any], max_epochs: int) -> tuple[str, dict[str, str]]:
    """MLflow status and tags of a trial that ended (Ray's TERMINATED), from its last result."""
    epochs = int(last.get("training_iteration", 0))
    tags = {"tune_run.epochs": str(epochs)}
    if last.get("diverged"):
        return "FAILED", tags | {"tune_run.status": "diverged", "tune_run.failure":
                                 f"loss became {last.get('train_loss')} at epoch {epochs}"}
    if epochs < max_epochs:
        return "FINISHED", tags | {"tune_run.status": "stopped_early",
                                   "tune_run.stopped_at_epoch": str(epochs)}
    return "FINISHED", tags | {"tune_run.status": "completed"}


def errored_run(trial: Trial) -> tuple[str, dict[str, str]]:
    return "FAILED", {"tune_run.status": "error", "tune_run.failure": _error_line(trial)}


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch that go to MLflow: the trainable's, not Ray's bookkeeping."""
    return {k: result[k] for k in METRICS if k in result}


def _error_line(trial: Trial) -> str:
    text = str(getattr(trial, "error_msg", "") or "")
    if not text and trial.error_file:
        try:
            with open(trial.error_file) as f:
                text = f.read()
        except OSError:
            text = ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:500]
