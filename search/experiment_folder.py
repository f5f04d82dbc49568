"""Reading Ray Tune's experiment folder: what each trial reported, epoch by epoch.

Ray writes one `result.json` per trial (a JSON line per reported result); these files are the
source of truth that sync, report and the promotion scheduler's resume rebuild from.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULT_FILE = "result.json"


def result_rows(trial_path: str | Path) -> list[dict]:
    """One row per reported epoch of the trial whose folder is `trial_path`, in epoch order.

    A step reported twice (a trial continued from an older checkpoint) keeps its first value, as
    MLflow does. A trial that never reported has no rows.
    """
    path = Path(trial_path) / RESULT_FILE
    if not path.exists():
        return []
    rows: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.setdefault(int(row["training_iteration"]), row)
    return [rows[step] for step in sorted(rows)]
