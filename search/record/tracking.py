"""The MLflow record of a search: one parent run, one nested child run per trial.

Everything is logged from the driver with MlflowClient, so trials on other machines need no access
to the tracking store. Runs are keyed by tags (the search's experiment folder, the trial id) and
reopened rather than recreated, so interruptions and resumes leave one record, and a step already
logged is never logged again.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from concurrent.futures import Future
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from core.hparams import FAULT_KEY, HPARAMS, resolve
from search.record import resolve_tracking_uri
from search.record.outcome import TrialEnds, TrialOutcome
from search.record.sqlite_store import make_whole, sqlite_file
from search.redact import first_line, redact
from trainables.metrics import EPOCH, METRICS

SEARCH_KEY = "tune_run.search_key"  # the experiment folder's absolute path
TRIAL_ID = "tune_run.trial_id"
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # a run's Description in the MLflow UI (Markdown)
RETRY_AFTER_S = 10.0  # after a failed call to the tracking store


def check_reachable(uri: str | None, timeout_s: float = 5.0) -> None:
    """Raises TrackingUnreachable when an http(s) tracking server does not answer /health."""
    if not uri or not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except requests.RequestException as e:
        raise TrackingUnreachable(
            f"--tracking-uri: no MLflow tracking server answers at {redact(uri)} "
            f"({type(e).__name__}); start it, or point --tracking-uri elsewhere"
        ) from None


class TrackingUnreachable(Exception):
    """The tracking server cannot be reached; the message is one line."""


class SearchRecord:
    """Finds or creates the runs of one search in an MLflow store."""

    def __init__(self, tracking_uri: str | None, experiment: str, search_key: str, name: str):

        # MLflow prints a run's URL, credentials included, when the run ends: never here.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        make_whole(self.tracking_uri)  # a new SQLite store comes whole, from a template
        self.client = MlflowClient(self.tracking_uri)
        self.search_key, self.name = search_key, name
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment)
        )
        self.parent_id = self._find_or_create_parent()
        self._children: dict[str, str] = {}  # trial id -> run id
        self._steps: dict[str, set[int]] = {}  # run id -> epochs logged

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
            run = runs[0]
            self._steps[run.info.run_id] = self._logged_steps(run.info.run_id)
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name,
                tags={PARENT: self.parent_id, TRIAL_ID: trial_id, SEARCH_KEY: self.search_key},
            )
            self._steps[run.info.run_id] = set()
        if not run.data.params:  # new, or the driver died between creating it and this
            self.client.log_batch(run.info.run_id,
                                  params=[Param(k, str(v)) for k, v in params.items()])
        self._children[trial_id] = run.info.run_id
        return run.info.run_id

    def _logged_steps(self, run_id: str) -> set[int]:
        # Each epoch goes in one batch, so the steps of its first metric are the epochs logged.
        return {m.step for m in self.client.get_metric_history(run_id, METRICS[0])}

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float], timestamp_ms: int,
                  tags: dict[str, str] | None = None) -> bool:
        """Logs one epoch's metrics in one batch; False (nothing logged) if `step` was logged."""
        logged = self._steps.setdefault(run_id, set())
        if step in logged:
            return False
        batch = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch,
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        logged.add(step)
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

    def log_settings(self, settings: dict[str, Any], space: dict[str, Any], space_file: str,
                     origin: str) -> None:
        """The search's settings and space as params of the parent run, and the space file under
        space/; what is logged already is kept (params cannot change)."""
        logged = self.client.get_run(self.parent_id).data.params
        params = [Param(k, str(v)) for k, v in sorted(settings.items()) if k not in logged]
        params += [Param(f"space.{k}", str(v)[:500]) for k, v in space.items()
                   if f"space.{k}" not in logged]
        if params:
            self.client.log_batch(self.parent_id, params=params)
        if "space_file" not in logged:
            self.client.log_artifact(self.parent_id, space_file, artifact_path="space")
            self.client.log_param(self.parent_id, "space_file", origin)

    def log_outcome(self, metrics: dict[str, float], best_trial_id: str,
                    best_config: dict[str, Any]) -> None:
        """The search's outcome on the parent run, once: metrics not logged yet, the best trial's
        id, and its configuration as best_config.json."""
        run = self.client.get_run(self.parent_id)
        for key, value in metrics.items():
            if key not in run.data.metrics:
                self.client.log_metric(self.parent_id, key, value)
        if run.data.tags.get("tune_run.best_trial_id") != best_trial_id:
            self.client.set_tag(self.parent_id, "tune_run.best_trial_id", best_trial_id)
            self.client.log_dict(self.parent_id, best_config, "best_config.json")

    def log_files(self, paths: list, folder: str) -> None:
        """Files as artifacts of the parent run under `folder` (overwriting those of that name)."""
        for path in paths:
            self.client.log_artifact(self.parent_id, str(path), artifact_path=folder)

    def describe(self, run_id: str, markdown: str, tags: dict[str, str] | None = None) -> None:
        """The run's Description in the MLflow UI (MLflow's `mlflow.note.content` tag), and any
        other `tags` that say where the run stands; only what changed is written."""
        have = self.client.get_run(run_id).data.tags
        wanted = {NOTE: markdown, **(tags or {})}
        changed = [RunTag(k, v) for k, v in wanted.items() if have.get(k) != v]
        if changed:
            self.client.log_batch(run_id, tags=changed)

    def finish(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        """Ends the run with `status` and `tags`; changes nothing when it already has them."""
        run = self.client.get_run(run_id)
        new_tags = {k: v for k, v in (tags or {}).items() if run.data.tags.get(k) != v}
        if new_tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in new_tags.items()])
        if run.info.status != status:
            self.client.set_terminated(run_id, status)

    def end_trial(self, run_id: str, outcome: TrialOutcome) -> None:
        """Ends a trial's run as `outcome` says: its MLflow status and tags (as `finish` does)."""
        self.finish(run_id, outcome.run_status, outcome.tags)

    @classmethod
    def find(cls, tracking_uri: str | None, experiment: str, search_key: str,
             name: str) -> SearchRecord | None:
        """The record of a search the store already holds, else None; creates nothing (not even
        a SQLite file)."""
        uri = resolve_tracking_uri(tracking_uri)
        db = sqlite_file(uri)
        if db is not None and not db.exists():
            return None
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id],
                                  f"tags.`{SEARCH_KEY}` = '{_quote(search_key)}'") if found else []
        if not any(TRIAL_ID not in r.data.tags for r in runs):
            return None
        return cls(uri, experiment, search_key, name)

    def log_best_model(self, name: str, classifier, card: dict[str, Any]) -> int:
        """Logs `classifier` (core.served.Classifier) as the parent run's model `name`, with the
        pytorch and images-in pyfunc flavours (search/record/model_flavour.py) and `card` in its metadata,
        and tags the run `tune_run.best_model`; returns the size of its weights file in bytes."""
        import mlflow
        from mlflow.models import Model

        from search.record import model_flavour

        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=self.parent_id):  # the model joins the run's experiment
            info = Model.log(artifact_path=None, name=name, flavor=model_flavour,
                             flavor_name="pytorch", run_id=self.parent_id,
                             metadata={"model_card": card}, classifier=classifier,
                             serialization_format=model_flavour.SERIALIZATION_FORMAT,
                             # MLflow's check loads the pyfunc model again and scans every
                             # installed package (~2 s); tests/search/test_model_flavour.py serves it
                             validate_serving_input=False)
        self.client.set_tag(self.parent_id, "tune_run.best_model", name)
        return int(info.metadata["weights_file_bytes"])

    def log_model_card(self, card: dict[str, Any], markdown: str) -> None:
        """The card on the parent run: model_card.json, model_card.md and its figures as metrics."""
        figures = ("params_nonzero", "params_total", "weights_file_bytes", "latency_ms_batch1",
                   "latency_ms_batch128")
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_id, metrics=[Metric(f"model_{k}", float(card[k]), now, 0)
                                                       for k in figures])
        self.client.log_dict(self.parent_id, card, "model_card.json")
        self.client.log_text(self.parent_id, markdown, "model_card.md")

    def register_best_model(self, registered_name: str, name: str, alias: str = "champion") -> str:
        """Registers the parent run's model `name` as a new version of `registered_name`, points
        `alias` at it (aliases, not the deprecated stages) and tags the run with both; returns the
        version."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        logged = [m for m in self.client.search_logged_models([self.experiment_id],
                                                              filter_string=f"name = '{name}'")
                  if m.source_run_id == self.parent_id]
        newest = max(logged, key=lambda m: m.creation_timestamp, default=None)
        uri = f"models:/{newest.model_id}" if newest else f"runs:/{self.parent_id}/{name}"
        version = mlflow.register_model(uri, registered_name)
        self.client.set_registered_model_alias(registered_name, alias, version.version)
        self.client.log_batch(self.parent_id, tags=[
            RunTag("tune_run.registered_model", registered_name),
            RunTag("tune_run.registered_version", str(version.version))])
        return str(version.version)

    def has_tag(self, key: str, value: str) -> bool:
        return self.client.get_run(self.parent_id).data.tags.get(key) == value

    def load_pyfunc(self, name: str):
        """The parent run's model `name` as `mlflow.pyfunc.load_model` gives it."""
        import mlflow.pyfunc

        mlflow.set_tracking_uri(self.tracking_uri)
        before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no bars among answers
        try:
            return mlflow.pyfunc.load_model(f"runs:/{self.parent_id}/{name}")
        finally:
            if before is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


# What a trial reports about how it ran, recorded as tags of its child run.
RUN_FACTS = ("device", "precision", "layout", "layout_reason", "node")


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
    """The trial's full hyperparameters, defaults included (what it actually trained with), and
    the values of a user's model function's own parameters."""
    own = {k: v for k, v in config.items() if k not in HPARAMS and k != FAULT_KEY}
    return resolve({k: v for k, v in config.items() if k not in own and k != FAULT_KEY}) | own


def _opened(opening: Future | None) -> SearchRecord | None:
    """The record opened elsewhere; None if there was none, or opening it failed (the callback
    then opens its own, and a second failure is told as any other)."""
    try:
        return opening.result() if opening else None
    except Exception:  # the tracking store is out of our hands
        return None


def _tolerant(method):
    """A callback method that logs a warning instead of stopping the search when MLflow fails: the
    search goes on and `sync_trials` fills in what is missing from Ray's files at the end."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if time.monotonic() < self.retry_at:  # down a moment ago: do not stall the search on it
            self.lost += 1
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # the tracking store is out of our hands: any failure is possible
            if not self.lost:
                print(f"tune-run: warning: MLflow logging failed ({first_line(e)}); training "
                      "goes on and the record is completed from Ray's results", file=sys.stderr)
            self.lost += 1
            self.record = None  # reconnect on a later event
            self.retry_at = time.monotonic() + RETRY_AFTER_S
        return None

    return wrapper


class MlflowTracking(Callback):
    """Ray Tune callback logging each trial to its child run, from the driver."""

    def __init__(self, tracking_uri: str | None, experiment: str, search_key: str, name: str,
                 max_epochs: int, dimensions: list[str], rungs: tuple[int, ...] = (),
                 opening: Future | None = None, ends: TrialEnds | None = None):
        """`opening`: the search's record being opened elsewhere, to use once it is open; `ends`:
        the search's TrialEnds, shared with the console (else one of its own)."""
        self.args = (tracking_uri, experiment, search_key, name)
        self.ends = ends or TrialEnds(max_epochs, rungs)
        self.opening = opening
        self.dimensions = dimensions
        self.record: SearchRecord | None = None
        self.unfinished: list[str] = []  # trials left unfinished when the experiment ended
        self.lost = 0  # events that could not be logged
        self.retry_at = 0.0  # time.monotonic() before which logging is not tried again

    def __getstate__(self) -> dict:
        # Ray pickles callbacks into its experiment state; the client is rebuilt on restore.
        return ({k: v for k, v in self.__dict__.items() if k not in ("record", "opening")}
                | {"record": None, "opening": None})

    def _run(self, trial: Trial) -> str:
        if self.record is None:
            opening, self.opening = self.opening, None
            self.record = _opened(opening) or SearchRecord(*self.args)
        return self.record.child(trial.trial_id, run_name(trial.trial_id, trial.config,
                                 self.dimensions), trial_params(trial.config))

    @_tolerant
    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.ends.started(trial)
        run_id = self._run(trial)
        self.record.reopen(run_id)

    @_tolerant
    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict,
                        **info) -> None:
        metrics = epoch_metrics(result)
        tags = {f"tune_run.{key}": str(result[key]) for key in RUN_FACTS if key in result} or None
        timestamp = int(result.get("timestamp", time.time()) * 1000)
        run_id = self._run(trial)
        self.record.log_epoch(run_id, int(result[EPOCH]), metrics, timestamp, tags)

    @_tolerant
    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        run_id = self._run(trial)
        self.record.end_trial(run_id, self.ends.completed(trial))

    @_tolerant
    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        run_id = self._run(trial)
        self.record.end_trial(run_id, self.ends.errored(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self.unfinished = [t.trial_id for t in trials
                           if t.status not in (Trial.TERMINATED, Trial.ERROR)]
        self._mark_interrupted()

    @_tolerant
    def _mark_interrupted(self) -> None:
        if self.record is None:
            return
        for trial_id in self.unfinished:
            run_id = self.record.opened(trial_id)
            if run_id:
                self.record.end_trial(run_id, TrialOutcome.interrupted())


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch that go to MLflow: the trainable's, not Ray's bookkeeping."""
    return {k: result[k] for k in METRICS if k in result}
