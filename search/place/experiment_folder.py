"""The one reader of Ray Tune's experiment folder (and of what tune-run keeps beside it).

Ray writes one `result.json` per trial (a JSON line per reported result) and its experiment state;
these files are the source of truth that sync, report, resume, `tune-run ls` and the promotion
scheduler's resume rebuild from. tune-run adds the resolved settings (`tune_run.json`), a copy of the
space file (`space/`), a file saying the search finished (`tune_run_done.json`), and one saying which
process drives it while it runs (`tune_run_driver.json`), and `tune-run stop`'s request to that
process (`tune_run_stop.json`).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.metrics import EPOCH, finite

RESULT_FILE = "result.json"
SAVED_SPACE = "space"  # folder of the space file's copy
SAVED_SETTINGS = "tune_run.json"  # the resolved settings, for `--resume NAME`
DONE = "tune_run_done.json"  # written when the search has finished
DRIVER = "tune_run_driver.json"  # the driver process (host, pid) while the search runs
STOP_REQUEST = "tune_run_stop.json"  # `tune-run stop` asked the driver to stop (by whom, when)
TOTAL_TRIALS = "_total_trials"  # key of SAVED_SETTINGS: num_samples x grid points


def result_rows(trial_path: str | Path) -> list[dict]:
    """One row per reported epoch of the trial whose folder is `trial_path`, in epoch order.

    A step reported twice (a trial continued from an older checkpoint) keeps its first value, as
    MLflow does. A trial that never reported has no rows.
    """
    path = Path(trial_path) / RESULT_FILE
    if not path.exists():
        return []
    return _rows(path.read_text())


def trial_rows(trial) -> list[dict]:
    """result_rows of a trial of a running or restored search, read where Ray keeps it (a local
    folder, or S3: a restored driver has only Ray's state, not the trials' results, locally)."""
    try:
        with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/{RESULT_FILE}") as f:
            return _rows(f.read().decode())
    except OSError:  # not reported yet
        return []


def _rows(text: str) -> list[dict]:
    """The rows of a result.json's text. A line cut short by a kill of the driver while it wrote
    the line is left out (the trial's next start rewrites the file without it)."""
    rows: dict[int, dict] = {}
    for line in text.splitlines():
        if line.strip() and _whole_row(line):
            row = json.loads(line)
            rows.setdefault(int(row[EPOCH]), row)
    return [rows[step] for step in sorted(rows)]


def merged_result_text(older: str, newer: str) -> str:
    """One trial's result.json from two copies of it that may each lack lines of the other (the
    storage's copy lags behind the driver's): every line of either once, in epoch order. A step
    reported twice keeps its two lines in the order they came, so result_rows keeps the first. A
    partial line (a copy taken while the line was written) is left out: the other copy has it."""
    every = dict.fromkeys((*older.splitlines(), *newer.splitlines()))  # once each, in order
    lines = [line for line in every if line.strip() and _whole_row(line)]
    lines.sort(key=lambda line: int(json.loads(line)[EPOCH]))  # stable
    return "".join(f"{line}\n" for line in lines)


def _whole_row(line: str) -> bool:
    try:
        return EPOCH in json.loads(line)
    except ValueError:
        return False



def trials(experiment_path: str | Path) -> list:
    """Ray's trials of the experiment (status, config, folder) from its latest saved state."""
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(str(experiment_path)).trials


def error_log(trial) -> str | None:
    """The full log of a trial's last error, in the experiment folder (Ray's own path to it is a
    staging copy under /tmp/ray); None if it has none."""
    if not trial.error_file:
        return None
    kept = Path(trial.path or "", Path(trial.error_file).name)
    return str(kept) if trial.path and kept.exists() else trial.error_file


def trial_histories(experiment_path: str | Path) -> list[tuple[Any, list[dict]]]:
    """Every trial with its reported epochs, in Ray's order."""
    return [(t, result_rows(t.path)) for t in trials(experiment_path)]


def can_resume(experiment_path: str | Path) -> bool:
    """Whether Ray saved enough of the search to continue it."""
    from ray import tune

    path = Path(experiment_path)
    return path.is_dir() and tune.Tuner.can_restore(str(path))


def all_trials_ended(experiment_path: str | Path, total_trials: int) -> bool:
    """Whether Ray's saved state has `total_trials` trials, each ended (finished, stopped early or
    errored). Read from the folder, not from callbacks: a Ctrl-C while a restored search starts
    leaves trials PENDING there that no callback saw end."""
    from ray.tune.experiment import Trial

    saved = trials(experiment_path)
    ended = all(t.status in (Trial.TERMINATED, Trial.ERROR) for t in saved)
    return ended and len(saved) >= total_trials


def unended_text(experiment_path: str | Path, total_trials: int) -> str:
    """What Ray's saved state leaves unended: its trials not finished, stopped or errored, by
    status, and the trials not yet created."""
    from collections import Counter

    from ray.tune.experiment import Trial

    saved = trials(experiment_path)
    left = Counter(t.status for t in saved if t.status not in (Trial.TERMINATED, Trial.ERROR))
    parts = [f"{n} {status.lower()}" for status, n in sorted(left.items())]
    if len(saved) < total_trials:
        parts.append(f"{total_trials - len(saved)} not started")
    return ", ".join(parts) or f"all {len(saved)} trials ended"


def trial_folders(experiment_path: str | Path) -> list[Path]:
    """The folders of trials that reported at least once."""
    path = Path(experiment_path)
    return sorted(d for d in path.iterdir() if (d / RESULT_FILE).exists()) if path.is_dir() else []


def epochs_trained(experiment_path: str | Path) -> int:
    return sum(len(result_rows(d)) for d in trial_folders(experiment_path))


def progress_text(experiment_path: str | Path, total_trials: int) -> str:
    """How far a search got, from its trials' result files."""
    started = trial_folders(experiment_path)
    return (f"{len(started)} of {total_trials} trials started, "
            f"{epochs_trained(experiment_path)} epochs trained")


def resume_command(name: str, storage: str | Path) -> str:
    """The command that continues the search `name` of the storage folder."""
    return f"tune-run --resume {name} --storage {storage}"


def saved_settings(experiment_path: str | Path) -> dict[str, Any] | None:
    path = Path(experiment_path) / SAVED_SETTINGS
    return json.loads(path.read_text()) if path.exists() else None


# --- the driver while it runs -------------------------------------------------------------------

HEARTBEAT_S = 60.0  # how often a running driver renews its mark
SILENT_S = 3 * HEARTBEAT_S  # a mark from another machine older than this: its driver is gone


def mark_running(experiment_path: str | Path) -> None:
    """Says this process drives the search (`tune-run ls` shows it running), as of now: the
    driver renews the mark every HEARTBEAT_S, so a driver on another machine that died without a
    word shows as gone once its mark is older than SILENT_S."""
    path = Path(experiment_path)
    path.mkdir(parents=True, exist_ok=True)
    mark = {"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()}
    (path / DRIVER).write_text(json.dumps(mark))


def mark_stopped(experiment_path: str | Path) -> None:
    (Path(experiment_path) / DRIVER).unlink(missing_ok=True)


def _driver_alive(experiment_path: Path) -> bool:
    """Whether the process that marked the search running is still alive. A driver on another
    machine cannot be asked: it counts as alive while it renews its mark (clocks more than
    SILENT_S apart would fool this)."""
    try:
        driver = json.loads((experiment_path / DRIVER).read_text())
    except (OSError, ValueError):
        return False
    if driver.get("host") != socket.gethostname():
        beat = driver.get("beat")
        return not isinstance(beat, (int, float)) or time.time() - beat < SILENT_S
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def request_stop(experiment_path: str | Path) -> dict[str, Any]:
    """Asks the search's driver to stop (`tune-run stop`): it polls for this file."""
    request = {"by": f"{getpass.getuser()}@{socket.gethostname()}", "pid": os.getpid(),
               "at": time.time()}
    (Path(experiment_path) / STOP_REQUEST).write_text(json.dumps(request))
    return request


def stop_request(experiment_path: str | Path) -> dict[str, Any] | None:
    """The stop request in the folder, if any (a half-written one counts once whole)."""
    try:
        request = json.loads((Path(experiment_path) / STOP_REQUEST).read_text())
    except (OSError, ValueError):
        return None
    return request if isinstance(request, dict) else None


def clear_stop_request(experiment_path: str | Path) -> None:
    (Path(experiment_path) / STOP_REQUEST).unlink(missing_ok=True)


# --- every search of a storage folder (`tune-run ls`) -------------------------------------------

@dataclass
class SearchState:
    """One search of a storage folder, as `tune-run ls` shows it."""

    name: str
    path: Path
    state: str  # running | unfinished | finished | not started
    trials_done: int  # ended: completed, stopped early, diverged or errored
    trials_total: int
    epochs: int
    metric: str
    mode: str
    best: float | None
    last_activity: float  # seconds since the epoch


def search_state(experiment_path: str | Path) -> SearchState | None:
    """The state of the tune-run search in `experiment_path`; None if it is not one."""
    from ray.tune.experiment import Trial

    path = Path(experiment_path)
    settings = saved_settings(path)
    if settings is None:
        return None
    metric, mode = settings["metric"], settings["mode"]
    # a search saved before tune-run kept its total (dd821a3) counts num_samples, its grid aside
    total = int(settings.get(TOTAL_TRIALS, settings.get("num_samples", 0)))
    resumable = can_resume(path)
    saved = trials(path) if resumable else []
    done = sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in saved)
    values = [row[metric] for d in trial_folders(path) for row in result_rows(d)
              if finite(row.get(metric))]
    best = (max if mode == "max" else min)(values) if values else None
    if (path / DONE).exists():
        state = "finished"
    elif (path / DRIVER).exists() and _driver_alive(path):
        state = "running"
    else:
        state = "unfinished" if resumable else "not started"
    files = [path, *path.iterdir(), *(d / RESULT_FILE for d in trial_folders(path))]
    last = max(f.stat().st_mtime for f in files)
    return SearchState(path.name, path, state, done, max(total, len(saved)), epochs_trained(path),
                       metric, mode, best, last)


def search_states(storage: str | Path) -> list[SearchState]:
    """Every tune-run search in the storage folder, the most recently active first."""
    root = Path(storage)
    if not root.is_dir():
        return []
    found = [search_state(d) for d in root.iterdir() if d.is_dir()]
    return sorted((s for s in found if s), key=lambda s: s.last_activity, reverse=True)


def ago(seconds_since_epoch: float, now: float | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 days ago'."""
    delta = max(0.0, (now or time.time()) - seconds_since_epoch)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            return f"{delta / size:.0f} {unit} ago"
    return f"{delta:.0f} s ago"
