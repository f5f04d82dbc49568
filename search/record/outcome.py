"""How a trial ended, said the same way everywhere: one `TrialOutcome`, built once when the trial ends,
rendered as its child run's MLflow status and tags, the console's line, and the Markdown description
of its run (which the report writes).

`TrialEnds` builds it: the console and the MLflow callback both hear of a trial's end, and the first
to ask builds the outcome, the second gets that same object; it is kept in the trial's folder
(`tune_run_outcome.json`), where the report and `tune-run sync` read it back.

It sits in record/ (which door/, report/ and the console import) and imports nothing of search/ but
place/, so every part that tells an outcome can import it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial

from search.place.experiment_folder import error_log
from trainables.metrics import EPOCH, finite

# Each kind of outcome (the child run's tune_run.status tag, the leaderboard's status column) and
# how a count of them reads ("2 stopped early").
KINDS = {"completed": "completed", "stopped_early": "stopped early", "diverged": "diverged",
         "error": "failed", "interrupted": "interrupted"}
RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "diverged": "FAILED",
              "error": "FAILED", "interrupted": "KILLED"}  # MLflow's status of the child run
FAILURE_CHARS = 500  # of the error's last line, in the tune_run.failure tag
CONSOLE_FAILURE_CHARS = 200  # of that line, on the console
OUTCOME_FILE = "tune_run_outcome.json"  # in the trial's folder, once it has ended


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended: its kind (one of KINDS), the last epoch on record, and what explains it.

    Build it with `ended`, `errored`, `interrupted`, or `of` (from Ray's trial status); render it
    with `run_status` and `tags` (MLflow), `console_text` (the console's "tNN ended: ..." line) and
    `description` (the child run's Description). Example:

        >>> outcome = TrialOutcome.ended({EPOCH: 2, "val_acc": 0.5}, 4, (1, 2))
        >>> outcome.tags["tune_run.stopped_at_rung"], outcome.console_text("val_acc")
        ('2', 'stopped at rung 2 (epoch 2), val_acc 0.5')
    """

    kind: str
    epochs: int  # the last epoch reported; 0: none on record
    rung: int | None = None  # stopped_early: the ASHA rung (from 1) whose epoch it stopped at
    failure: str = ""  # diverged or error: what went wrong, in one line
    log: str | None = None  # error: the full log, in the experiment folder
    last: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # last result

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TrialOutcome: kind must be one of {', '.join(KINDS)}, "
                             f"but got {self.kind=}")

    # --- built once, when the trial ends --------------------------------------------------------

    @classmethod
    def ended(cls, last: dict[str, Any], max_epochs: int,
              rungs: tuple[int, ...] = ()) -> TrialOutcome:
        """A trial Ray ended (TERMINATED), from its last result (`{}`: none on record); `rungs`
        are ASHA's milestone epochs, to name the rung it stopped at."""
        kind, epochs = outcome_kind(Trial.TERMINATED, last, max_epochs), _epochs(last)
        if kind == "diverged":
            failure = f"loss became {last.get('train_loss')} at epoch {epochs}"
            return cls(kind, epochs, failure=failure, last=dict(last))
        rung = list(rungs).index(epochs) + 1 if kind == "stopped_early" and epochs in rungs else None
        return cls(kind, epochs, rung=rung, last=dict(last))

    @classmethod
    def errored(cls, trial: Trial, last: dict[str, Any] | None = None) -> TrialOutcome:
        """A trial that failed with an error (Ray's ERROR); `last`: its last result, by default
        Ray's."""
        last = dict(getattr(trial, "last_result", None) or {}) if last is None else dict(last)
        return cls("error", _epochs(last), failure=error_line(trial), log=error_log(trial),
                   last=last)

    @classmethod
    def interrupted(cls, last: dict[str, Any] | None = None) -> TrialOutcome:
        """A trial the search left unfinished (running, pending or paused at a rung)."""
        last = dict(last or {})
        return cls("interrupted", _epochs(last), last=last)

    @classmethod
    def of(cls, trial: Trial, last: dict[str, Any], max_epochs: int,
           rungs: tuple[int, ...] = ()) -> TrialOutcome:
        """The outcome Ray's status of `trial` says, with its last result `last`."""
        kind = outcome_kind(trial.status, last, max_epochs)
        if kind == "error":
            return cls.errored(trial, last)
        if kind == "interrupted":
            return cls.interrupted(last)
        return cls.ended(last, max_epochs, rungs)

    # --- MLflow -----------------------------------------------------------------------------------

    @property
    def run_status(self) -> str:
        """The child run's MLflow status: FINISHED, FAILED or KILLED."""
        return RUN_STATUS[self.kind]

    @property
    def tags(self) -> dict[str, str]:
        """The child run's tags that say how it ended: tune_run.status, and tune_run.epochs,
        tune_run.stopped_at_epoch, tune_run.stopped_at_rung, tune_run.failure where they apply."""
        status = {"tune_run.status": self.kind}
        if self.kind == "error":
            return status | {"tune_run.failure": self.failure}
        if self.kind == "interrupted":
            return status
        epochs = {"tune_run.epochs": str(self.epochs)}
        if self.kind == "diverged":
            return epochs | status | {"tune_run.failure": self.failure}
        if self.kind == "stopped_early":
            rung = {"tune_run.stopped_at_rung": str(self.rung)} if self.rung else {}
            return epochs | rung | status | {"tune_run.stopped_at_epoch": str(self.epochs)}
        return epochs | status

    # --- the console ------------------------------------------------------------------------------

    def console_text(self, metric: str, why: str = "") -> str:
        """What follows "tNN ended: " on the console; `why`: the rung decision that stopped it,
        in words (e.g. "val_acc 0.3 below the rung's cut 0.4")."""
        value = f"{metric} {_num(self.last.get(metric))}"
        if self.kind == "completed":
            return f"completed {self.epochs} epochs, {value}"
        if self.kind == "diverged":
            return f"diverged at epoch {self.epochs} (train_loss {self.last.get('train_loss')})"
        if self.kind == "stopped_early" and why:
            return f"stopped at epoch {self.epochs}: {why}"
        if self.kind == "stopped_early":
            where = f"rung {self.rung} (epoch {self.epochs})" if self.rung else f"epoch {self.epochs}"
            return f"stopped at {where}, {value}"
        if self.kind == "error":
            return f"error: {self.error_text}"
        if self.kind == "interrupted":
            return f"interrupted after {self.epochs} epochs"
        raise ValueError(f"no console text for {self.kind=}")

    @property
    def error_text(self) -> str:
        """The error in a console line: its last line, shortened, and where the full log is."""
        return self.failure[:CONSOLE_FAILURE_CHARS] + (f" (full log: {self.log})" if self.log else "")

    # --- the run's description --------------------------------------------------------------------

    def description(self, metric: str, best: dict[str, Any] | None = None, why: str = "",
                    resume: str = "") -> str:
        """How the trial ended and why, in a sentence or two of Markdown (the child run's
        Description). `best`: its result with the best `metric`; `why`: why ASHA stopped it at its
        rung; `resume`: the command that continues an interrupted search."""
        best_text = (f" Its best {metric} was {best[metric]:.4g} at epoch "
                     f"{best[EPOCH]}." if best else "")
        if self.kind == "completed":
            return f"**Completed** all {self.epochs} epochs.{best_text}"
        if self.kind == "diverged":
            return (f"**Diverged**: the training loss became {self.last.get('train_loss')} at epoch "
                    f"{self.epochs}, so it was stopped at once (no checkpoint of it is kept)."
                    f"{best_text}")
        if self.kind == "stopped_early" and not self.epochs:
            # Ray ended it, but no epoch of it reached the experiment folder (a kill before its
            # first result was written, or a bucket that never got it).
            return "**Stopped** with no epoch on record."
        if self.kind == "stopped_early" and self.rung is None:
            return f"**Stopped early** at epoch {self.epochs}.{best_text}"
        if self.kind == "stopped_early":
            return (f"**Stopped by ASHA at rung {self.rung}** (epoch {self.epochs})"
                    f"{': ' + why if why else ''}.{best_text}")
        if self.kind == "error":
            log = f" Full log: `{self.log}`." if self.log else ""
            return f"**Failed** at epoch {self.epochs + 1} with an error: `{self.failure}`.{log}"
        if self.kind == "interrupted":
            how = f"; `{resume}` continues it from its last checkpoint" if resume else ""
            return f"**Interrupted** after {self.epochs} epochs, before it ended{how}.{best_text}"
        raise ValueError(f"no description for {self.kind=}")


def outcome_kind(status: str, last: dict[str, Any], max_epochs: int) -> str:
    """The kind of outcome (one of KINDS) of a trial with Ray's `status` and last result `last`:
    what the leaderboard's status column needs, without reading the trial's error."""
    if status == Trial.ERROR:
        return "error"
    if status != Trial.TERMINATED:
        return "interrupted"
    if last.get("diverged"):
        return "diverged"
    return "stopped_early" if _epochs(last) < max_epochs else "completed"


def _epochs(last: dict[str, Any]) -> int:
    return int(last.get(EPOCH, 0))


def error_line(trial: Trial) -> str:
    """The last line of the trial's error (Ray's message, else its error file), at most
    FAILURE_CHARS characters; "unknown error" when there is none."""
    text = str(getattr(trial, "error_msg", "") or "")
    if not text and trial.error_file:
        try:
            with open(trial.error_file) as f:
                text = f.read()
        except OSError:
            text = ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:FAILURE_CHARS]


def _num(value: Any) -> str:
    return f"{value:.4g}" if finite(value) else str(value)


# --- built once, kept in the trial's folder ---------------------------------------------------------

class TrialEnds:
    """Each trial's outcome, built once when it ends by whichever callback asks first (see the
    module's docstring), and saved in the trial's folder. Callbacks pickled with Ray's state
    carry it; a restored search starts a new one."""

    def __init__(self, max_epochs: int, rungs: tuple[int, ...] = ()):
        self.max_epochs, self.rungs = max_epochs, tuple(rungs)
        self._built: dict[tuple[str, str, int], TrialOutcome] = {}

    def completed(self, trial: Trial) -> TrialOutcome:
        """The outcome of a trial Ray ended (TERMINATED)."""
        last = trial.last_result or {}
        return self._once(trial, "ended", lambda: TrialOutcome.ended(last, self.max_epochs,
                                                                     self.rungs))

    def errored(self, trial: Trial) -> TrialOutcome:
        return self._once(trial, "error", lambda: TrialOutcome.errored(trial))

    def started(self, trial: Trial) -> None:
        """A trial (re)starts: an outcome saved by an earlier run no longer holds."""
        if getattr(trial, "local_path", None):
            Path(trial.local_path, OUTCOME_FILE).unlink(missing_ok=True)

    def _once(self, trial: Trial, how: str, build) -> TrialOutcome:
        key = (trial.trial_id, how, int((trial.last_result or {}).get(EPOCH, 0)))
        if key not in self._built:
            self._built[key] = outcome = build()
            if getattr(trial, "local_path", None):
                save_outcome(trial.local_path, outcome)
        return self._built[key]


def save_outcome(trial_path: str | Path, outcome: TrialOutcome) -> None:
    path = Path(trial_path, OUTCOME_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(outcome), default=str))


def saved_outcome(trial: Trial) -> TrialOutcome | None:
    """The outcome kept in the trial's folder when it ended, if it still holds: Ray's saved status
    says the trial ended the same way (a kill while it was written, or a search from before it
    was kept: None)."""
    try:
        saved = TrialOutcome(**json.loads(Path(getattr(trial, "path", None) or "",
                                               OUTCOME_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if trial.status not in (Trial.TERMINATED, Trial.ERROR) or (
            (saved.kind == "error") != (trial.status == Trial.ERROR)):
        return None
    return saved


def outcome_of(trial: Trial, last: dict[str, Any], max_epochs: int,
               rungs: tuple[int, ...] = ()) -> TrialOutcome:
    """The trial's outcome as it was built when it ended, else as Ray's saved status says."""
    return saved_outcome(trial) or TrialOutcome.of(trial, last, max_epochs, rungs)

