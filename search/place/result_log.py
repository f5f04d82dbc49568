"""The writer of each trial's result.json: Ray Tune's own, except that it never loses an epoch.

When a trial restarts from its checkpoint (its node was lost, or it failed), Ray's writer replaces
the driver's copy of the trial's result.json with the storage's, to go on from it. On S3 that copy
lags behind: Ray uploads the driver's files in the background and skips an upload while the last
one is under way, so the bucket may hold a file of fewer epochs, or an empty one. Ray's next upload
then replaced the bucket's file with that one plus the epochs after the restore: report, sync,
resume and `tune-run ls` lost the epochs before it. This writer puts back the lines the driver had.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.logger import JsonLoggerCallback

from search.place.experiment_folder import RESULT_FILE, merged_result_text


class WholeResultLog(JsonLoggerCallback):
    """Ray's JsonLoggerCallback (given to the Tuner, it takes the place of Ray's default one)
    whose file keeps every line the driver wrote, merged with the storage's copy on a restart."""

    def log_trial_start(self, trial) -> None:
        trial.init_local_path()  # the trial's folder on the driver (Ray names it on first start)
        local = Path(trial.local_path, RESULT_FILE)
        had = local.read_text() if local.exists() else ""
        super().log_trial_start(trial)  # may replace the file with the storage's copy
        now = local.read_text() if local.exists() else ""
        whole = merged_result_text(now, had)
        if whole != now:
            # Rewritten in place: Ray's handle appends (O_APPEND), its next line lands after these.
            local.write_text(whole)
