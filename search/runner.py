"""One search from start (or resume) to the best model on the test split.

Order matters: everything that can be refused (the experiment folder, the data, the tracking store)
is checked before Ray starts or anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from core.data import Dataset, load_dataset
from search.console import SearchConsole, quiet_outside_systems
from search.door.domains import grid_points
from search.door.preflight import check_tracking_uri, make_storage, run_checks
from search.door.spec import SearchSpec, load_spec
from search.errors import SpecError
from search.place import experiment_folder
from search.place import storage as stores
from search.place.cluster import check_data_reachable, check_shared_storage
from search.place.experiment_folder import (
    DONE,
    DRIVER,
    SAVED_SETTINGS,
    SAVED_SPACE,
    STOP_REQUEST,
    TOTAL_TRIALS,
)
from search.record.outcome import TrialEnds
from search.record.tracking import MlflowTracking, SearchRecord
from search.redact import first_line
from search.report.leaderboard import describe_runs, log_report
from search.report.results import SearchResults, complete_parent_run, summarise
from search.report.sync import sync_trials
from search.scheduling.pareto import spec_objectives
from search.scheduling.promotion import spec_rungs


@dataclass
class Outcome:
    finished: bool
    results: SearchResults | None
    resume_command: str
    left: str = ""  # what was left unended, for a search that stopped before the end
    stopped_by: dict | None = None  # the `tune-run stop` request it stopped on (by, pid, at)


def experiment_state(spec: SearchSpec) -> str:
    """'new', 'unfinished' or 'finished'."""
    path = stores.pull(spec.storage, spec.name)  # S3: a fresh local copy of the folder
    if (path / DONE).exists():
        return "finished"
    if experiment_folder.can_resume(path):
        return "unfinished"
    return "new"


def progress_text(spec: SearchSpec) -> str:
    """How far an unfinished search got, from its trials' result files."""
    return experiment_folder.progress_text(spec.experiment_path, total_trials(spec))


def total_trials(spec: SearchSpec) -> int:
    return spec.num_samples * grid_points(spec.space)


def resume_command(spec: SearchSpec) -> str:
    return experiment_folder.resume_command(spec.name, spec.storage)


def load_saved_spec(name: str, storage: str, overrides: dict, to_train: bool = True) -> SearchSpec:
    """The spec a search was started with, from its experiment folder (for `--resume NAME`).
    `to_train` False (report, predict): the model is not built again, so a user's model file that
    is gone since does not matter (the logged model carries its code)."""
    folder = stores.pull(storage, name)  # S3: a fresh local copy of the folder
    saved = folder / SAVED_SETTINGS
    if not saved.exists():
        raise SpecError(f"--resume: no search named {name!r} in "
                        f"{stores.tune_storage_path(storage)}")
    settings = json.loads(saved.read_text())
    quick, origin = settings.pop("_quick", False), settings.pop("_origin")
    settings.pop(TOTAL_TRIALS, None)
    test_faults = os.environ.get("TUNE_RUN_TEST_FAULTS") == "1"
    spec = load_spec(folder / SAVED_SPACE / Path(origin).name, settings | overrides, quick=quick,
                     allow_faults=test_faults, check_model=to_train, origin=origin)
    return spec


def run_search(spec: SearchSpec, resume: bool = False, address: str | None = None,
               retry_errored: bool = True, data: Dataset | None = None,
               verbose: bool = False) -> Outcome:
    """Runs (or resumes) the search of `spec`; returns whether it finished and its results.
    Ray's and MLflow's own output shows only with `verbose`; the console tells the search."""
    from search.scheduling.tuner import make_scheduler, new_tuner, restored_tuner, start_ray, trial_resources

    run_checks(spec, address)  # tracking URI, storage, data, cluster address
    _fail_fast_over_http(spec.tracking_uri)
    quiet_outside_systems(verbose)
    loading = None if data is not None else _load_data_while_ray_starts(spec)
    start_ray(address, verbose)
    data = data if loading is None else loading.result()  # a bad image refuses here: nothing written
    trial_resources(spec)  # more GPUs per trial than the cluster has: refused before any record
    check_shared_storage(spec.storage)  # a local folder that other nodes cannot see: refused
    check_data_reachable(spec, data)  # a data set too big to ship: every node must read data_dir
    make_storage(spec.storage)  # only once everything was checked: a refusal leaves nothing
    opening = _open_record(spec)
    ends = TrialEnds(spec.max_epochs, spec_rungs(spec))  # each trial's outcome, built once
    callback = MlflowTracking(spec.tracking_uri, spec.experiment, spec.experiment_uri,
                              spec.name, spec.max_epochs, spec.dimensions, spec_rungs(spec),
                              opening=opening, ends=ends)
    console = SearchConsole(spec.name, spec.metric, spec.mode, total_trials(spec), spec.max_epochs,
                            spec.dimensions, spec_rungs(spec),
                            epochs_done=experiment_folder.epochs_trained(spec.experiment_path),
                            also=tuple(o.metric for o in spec_objectives(spec)[1:]), ends=ends)
    scheduler = make_scheduler(spec)
    if resume:
        tuner = restored_tuner(spec, data, [callback, console], retry_errored, verbose, scheduler)
    else:
        _save_spec(spec)
        tuner = new_tuner(spec, data, [callback, console], verbose, scheduler)
    console.follow(scheduler)
    _clear_stop_request(spec)  # a request that stopped the search before does not stop this run
    try:
        with _driving(spec) as watch:
            grid = tuner.fit()
    finally:
        console.close()
        stores.pull(spec.storage, spec.name)  # S3: the result files the nodes and Ray wrote
    finished = not callback.unfinished and all_trials_ended(spec)
    results, model = summarise(spec, grid, data) if finished else (None, None)
    if results:
        (spec.experiment_path / DONE).write_text(json.dumps(results.summary(), indent=2))
        stores.push(spec.storage, spec.name, DONE)
    _record_with_retries(spec, opening, results.summary() if results else None, model)
    left = "" if finished else experiment_folder.unended_text(spec.experiment_path, total_trials(spec))
    return Outcome(finished, results, resume_command(spec), left, watch.request)


def _load_data_while_ray_starts(spec: SearchSpec) -> Future:
    """The data set, decoded in a thread: `ray.init` mostly waits for Ray's processes to come up,
    and decoding (or reading the cache) takes seconds of its own."""
    return _in_background("tune-run data", load_dataset, spec.dataset, spec.data_dir,
                          spec.val_fraction, spec.subset, spec.seed, image_size=spec.image_size,
                          **spec.data_options)


def _in_background(name: str, fn, *args, **kwargs) -> Future:
    """fn(*args, **kwargs) in a daemon thread: a search that fails or is interrupted meanwhile
    exits at once rather than waiting for it (a first decode of a big data set takes minutes)."""
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to whoever waits for the result
            done.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


def _open_record(spec: SearchSpec) -> Future:
    """The search's MLflow record (parent run and settings), opened while Ray starts the trials'
    workers when the store is local: the first new SQLite store of an MLflow version builds its
    template (seconds; search/record/sqlite_store.py), and a store MLflow would refuse was refused
    by preflight before Ray started. A server's store opens at once, here, so that a refusal comes
    before any training."""
    if (spec.tracking_uri or "").startswith(("http://", "https://")):
        opening: Future = Future()
        opening.set_result(_new_record(spec))
        return opening
    return _in_background("tune-run record", _new_record, spec)


def _opened_record(opening: Future, spec: SearchSpec) -> SearchRecord:
    """The opened record; opened again if opening it failed while the search ran."""
    try:
        return opening.result()
    except Exception:  # the store is out of our hands; a second failure is the user's to see
        return _new_record(spec)


def _new_record(spec: SearchSpec) -> SearchRecord:
    record = SearchRecord(spec.tracking_uri, spec.experiment, spec.experiment_uri, spec.name)
    _log_search_settings(record, spec)
    return record


STOP_POLL_S = 1.0  # how often the driver looks for `tune-run stop`'s request in a local folder
STOP_POLL_REMOTE_S = 5.0  # ... in a bucket (one small GET each time)


class _StopWatch:
    """Looks for `tune-run stop`'s request while the search runs; on one, stops the search the way
    Ctrl-C does (Ray saves every trial's state and ends them, resumable)."""

    def __init__(self, spec: SearchSpec):
        self._spec = spec
        self.request: dict | None = None

    def watch(self, done: threading.Event) -> None:
        poll = STOP_POLL_REMOTE_S if stores.is_remote(self._spec.storage) else STOP_POLL_S
        while not done.wait(poll):
            try:
                here = stores.fetch(self._spec.storage, self._spec.name, STOP_REQUEST)
            except Exception:  # a bucket away for a while: the next poll asks again
                continue
            request = experiment_folder.stop_request(self._spec.experiment_path) if here else None
            if request:
                self.request = request
                print(f"tune-run: stop asked by {request.get('by', 'someone')}: ending the "
                      "trials where they are (resumable)", file=sys.stderr)
                os.kill(os.getpid(), signal.SIGINT)
                return


def _clear_stop_request(spec: SearchSpec) -> None:
    experiment_folder.clear_stop_request(spec.experiment_path)
    stores.remove(spec.storage, spec.name, STOP_REQUEST)


@contextmanager
def _driving(spec: SearchSpec):
    """Marks the search as driven by this process while the block runs (`tune-run ls`, from any
    machine), renewing the mark every HEARTBEAT_S, and watches for `tune-run stop`'s request;
    the mark goes when the block ends, for good. Yields the _StopWatch."""
    mark = _DriverMark(spec)
    mark.write()
    watch = _StopWatch(spec)

    def renew() -> None:
        while not stop.wait(experiment_folder.HEARTBEAT_S):
            try:
                mark.write()
            except Exception:  # a bucket away for a while: the next beat tries again
                pass

    stop = threading.Event()
    beats = threading.Thread(target=renew, name="tune-run driver mark", daemon=True)
    beats.start()
    threading.Thread(target=watch.watch, args=(stop,), name="tune-run stop watch",
                     daemon=True).start()
    try:
        yield watch
    finally:
        stop.set()
        mark.remove()


class _DriverMark:
    """The driver's mark, here and in the bucket. Written and removed under one lock, and never
    written once removed: a beat under way when the search ends (a slow bucket) finishes before the
    removal, and a later one writes nothing, so no search shows as running after its driver ended."""

    def __init__(self, spec: SearchSpec):
        self._spec = spec
        self._lock = threading.Lock()
        self._removed = False

    def write(self) -> None:
        with self._lock:
            if self._removed:
                return
            experiment_folder.mark_running(self._spec.experiment_path)
            stores.push(self._spec.storage, self._spec.name, DRIVER)

    def remove(self) -> None:
        with self._lock:
            self._removed = True
            experiment_folder.mark_stopped(self._spec.experiment_path)
            stores.remove(self._spec.storage, self._spec.name, DRIVER)


def _record_with_retries(spec: SearchSpec, opening: Future, summary: dict | None,
                         model: torch.nn.Module | None, waits_s: tuple[float, ...] = (5, 10, 20)) -> None:
    """record_search into the record `opening` opened (opened again if that failed), waiting a
    little for a tracking server that is away; if it stays away, Ray's files keep everything and
    `tune-run sync` completes the record later."""
    for wait in (*waits_s, None):
        try:
            record_search(spec, _opened_record(opening, spec), summary, model)
            return
        except Exception as e:  # the store is out of our hands
            if wait is None:
                print(f"tune-run: warning: the MLflow record is incomplete ({first_line(e)}); "
                      f"Ray's results keep the search: rebuild the record with `tune-run sync "
                      f"{spec.name} --storage {stores.tune_storage_path(spec.storage)}`",
                      file=sys.stderr)
                return
            print(f"tune-run: MLflow is not answering ({type(e).__name__}); retrying in {wait:g} s",
                  file=sys.stderr)
            time.sleep(wait)


def record_search(spec: SearchSpec, record: SearchRecord, summary: dict | None,
                  model: torch.nn.Module | None) -> int:
    """Brings the MLflow record in line with Ray's files: every trial and epoch, the statuses, and
    for a finished search (`summary`) the outcome, best model and report. Returns the trials seen."""
    trials = sync_trials(spec, record, finished=summary is not None)
    if summary is None:
        asked = experiment_folder.stop_request(spec.experiment_path)
        record.finish(record.parent_id, "KILLED",
                      {"tune_run.stopped_by": asked.get("by", "?")} if asked else None)
    else:
        complete_parent_run(record, summary, model, spec.register)
    describe_runs(spec, record, log_report(spec, record), summary)
    return trials


def _fail_fast_over_http(uri: str | None) -> None:
    if uri and uri.startswith(("http://", "https://")):
        # Fail fast while a server is down: the callback skips it for a while and Ray's files keep
        # what it missed (MLflow's own default retries for minutes with backoff).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def all_trials_ended(spec: SearchSpec) -> bool:
    """Whether Ray's saved experiment state has every trial of the search, each ended (finished,
    stopped early or errored). Read from the folder, not from the callbacks: a Ctrl-C while a
    restored search starts leaves trials PENDING there that no callback saw end."""
    return experiment_folder.all_trials_ended(spec.experiment_path, total_trials(spec))


def _save_spec(spec: SearchSpec) -> None:
    (spec.experiment_path / SAVED_SPACE).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.source, spec.experiment_path / SAVED_SPACE / spec.source.name)
    settings = dict(spec.settings) | {"_quick": spec.quick, "_origin": spec.origin,
                                      TOTAL_TRIALS: total_trials(spec),
                                      "storage": stores.tune_storage_path(spec.storage)}
    (spec.experiment_path / SAVED_SETTINGS).write_text(json.dumps(settings, indent=2))
    stores.push(spec.storage, spec.name, SAVED_SETTINGS, SAVED_SPACE)


def sync_search(spec: SearchSpec) -> int:
    """`tune-run sync`: rebuilds or completes the MLflow record of a search from its experiment
    folder; returns the number of trials. Running it twice changes nothing."""
    from trainables.checkpoints import model_from_checkpoint

    check_tracking_uri(spec.tracking_uri)
    _fail_fast_over_http(spec.tracking_uri)
    record = SearchRecord(spec.tracking_uri, spec.experiment, spec.experiment_uri, spec.name)
    _log_search_settings(record, spec, reopen=False)
    done = spec.experiment_path / DONE
    summary = json.loads(done.read_text()) if done.exists() else None
    model = model_from_checkpoint(stores.local_folder(summary["checkpoint"])) if summary else None
    return record_search(spec, record, summary, model)


def _log_search_settings(record: SearchRecord, spec: SearchSpec, reopen: bool = True) -> None:
    settings = spec.settings | {"storage": stores.tune_storage_path(spec.storage)}
    settings.pop("tracking_uri", None)  # may hold credentials
    record.log_settings(settings, spec.space, str(spec.source), spec.origin)
    if reopen:
        record.reopen(record.parent_id)
