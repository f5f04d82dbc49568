"""Ray's result files are the source of truth: rebuild or complete a search's MLflow record from its
experiment folder. Idempotent: steps already logged are skipped and statuses already right are kept.
"""

from __future__ import annotations

from ray.tune.experiment import Trial

from search.door.spec import SearchSpec
from search.place.experiment_folder import result_rows, trials
from search.record.outcome import outcome_of
from search.record.tracking import SearchRecord, epoch_metrics, run_name, trial_params
from search.scheduling.promotion import spec_rungs
from trainables.metrics import EPOCH


def sync_trials(spec: SearchSpec, record: SearchRecord, finished: bool) -> int:
    """Makes every trial of the experiment folder have its child run with every reported epoch.

    Trials Ray ended get their final status; the rest are KILLED (the search was interrupted) unless
    `finished`. Returns the number of trials seen.
    """
    saved = trials(spec.experiment_path)
    for trial in saved:
        run_id = record.child(trial.trial_id, run_name(trial.trial_id, trial.config, spec.dimensions),
                              trial_params(trial.config))
        rows = result_rows(trial.path)
        for row in rows:
            record.log_epoch(run_id, int(row[EPOCH]), epoch_metrics(row),
                             int(row.get("timestamp", 0) * 1000))
        if trial.status in (Trial.TERMINATED, Trial.ERROR) or not finished:
            record.end_trial(run_id, outcome_of(trial, rows[-1] if rows else {},
                                                spec.max_epochs, spec_rungs(spec)))
    # A trial started just before the driver was killed, but never saved in Ray's experiment
    # state, is not a trial of the search: Ray starts a new one in its place.
    record.delete_children_except({t.trial_id for t in saved})
    return len(saved)
