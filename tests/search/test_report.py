"""The report of a search: importance on planted data (fast), then one real search (slow)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from search import cli
from search.report.leaderboard import REPORT_DIR, hparam_importance, leaderboard_markdown, leaderboard_rows
from tests.conftest import REPO, write_space

slow = pytest.mark.slow  # the tests of the real search below

SPACE = {
    "lr": tune.loguniform(1e-4, 1e-1),
    "momentum": tune.uniform(0.8, 0.99),
    "optimizer": tune.choice(["sgd", "adamw"]),
}


def _planted_trials(n: int = 40) -> list[tuple[dict, float]]:
    # The score is decided by lr (its log distance to 1e-2); momentum and optimizer are noise.
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(n):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "momentum": float(rng.uniform(0.8, 0.99)),
                  "optimizer": str(rng.choice(["sgd", "adamw"]))}
        score = 1.0 - abs(np.log10(params["lr"]) + 2) / 2 + rng.normal(0, 0.01)
        trials.append((params, float(score)))
    return trials


def test_the_hyperparameter_that_decides_the_score_ranks_first():
    result = hparam_importance(SPACE, "max", _planted_trials())
    shares = result["importances"]
    assert next(iter(shares)) == "lr"
    assert shares["lr"] > 0.8
    assert sum(shares.values()) == pytest.approx(1.0)


def test_importance_does_not_depend_on_the_direction():
    # fANOVA explains the variance of the score: minimising the same scores ranks the same.
    result = hparam_importance(SPACE, "min", _planted_trials())
    assert next(iter(result["importances"])) == "lr"


def test_integer_and_grid_dimensions_become_optuna_distributions():
    space = {"epochs_warm": tune.randint(0, 3), "width": {"grid_search": [0.25, 0.5]}}
    trials = [({"epochs_warm": e, "width": w}, float(e)) for e in (0, 1, 2) for w in (0.25, 0.5)]
    result = hparam_importance(space, "max", trials)
    assert next(iter(result["importances"])) == "epochs_warm"


@pytest.mark.parametrize("trials, why", [
    ([], "at least 2"),
    ([({"lr": 0.01, "momentum": 0.9, "optimizer": "sgd"}, 0.5)], "at least 2"),
    ([({"lr": 0.01, "momentum": 0.9, "optimizer": "sgd"}, v) for v in (0.5, 0.7)], "one value"),
    ([({"lr": lr, "momentum": 0.9, "optimizer": "sgd"}, 0.5) for lr in (0.01, 0.02)], "the same"),
])
def test_too_little_to_go_on_gives_a_note_not_an_error(trials, why):
    result = hparam_importance(SPACE, "max", trials)
    assert "importances" not in result and why in result["note"]


def test_sample_from_dimensions_are_left_out_with_a_reason():
    space = {"lr": tune.loguniform(1e-4, 1e-1), "seed": tune.sample_from(lambda _: 1)}
    trials = [({"lr": lr, "seed": 1}, lr) for lr in (1e-3, 1e-2, 3e-2)]
    result = hparam_importance(space, "max", trials)
    assert set(result["importances"]) == {"lr"} and "seed" in result["not_used"]


def test_leaderboard_markdown_is_a_table_with_one_line_per_row():
    rows = [{"trial": "a_00001", "val_acc": 0.91234, "optimizer": "sgd"},
            {"trial": "a_00000", "val_acc": None, "optimizer": "a|b"}]
    lines = leaderboard_markdown(rows).splitlines()
    assert len(lines) == 4 and lines[0].split() == ["|", "trial", "|", "val_acc", "|",
                                                    "optimizer", "|"]
    assert "0.9123" in lines[2] and "a\\|b" in lines[3]


def _trial(trial_id: str, status: str, lr: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, status=status, config={"lr": lr})


def _epochs(*accs: float) -> list[dict]:
    return [{"training_iteration": i, "val_acc": a, "val_loss": 1.0 - i / 10}
            for i, a in enumerate(accs, 1)]


def _spec():
    from search.door.spec import build_spec

    return build_spec(Path("s.py"), {"max_epochs": 3}, {"lr": tune.loguniform(1e-4, 1e-1)})


def test_leaderboard_rows_rank_by_the_best_epoch_and_put_unscored_trials_last():
    trial, epochs = _trial, _epochs
    rows = leaderboard_rows(_spec(), [
        (trial("t0", "ERROR", 0.01), []),
        (trial("t1", "TERMINATED", 0.02), epochs(0.2)),  # stopped by ASHA after one epoch
        (trial("t2", "TERMINATED", 0.03), epochs(0.5, 0.7, 0.6)),
        (trial("t3", "RUNNING", 0.04), epochs(float("nan"), 0.3)),
    ])
    assert [r["trial"] for r in rows] == ["t2", "t3", "t1", "t0"]
    assert rows[0] == {"trial": "t2", "status": "completed", "epochs": 3, "val_acc": 0.7,
                       "best_epoch": 2, "final_val_loss": pytest.approx(0.7), "lr": 0.03}
    assert [r["status"] for r in rows[1:]] == ["interrupted", "stopped_early", "error"]
    assert rows[1]["best_epoch"] == 2 and rows[3]["val_acc"] is None


@pytest.mark.parametrize("histories", [
    [],
    [(_trial("t0", "RUNNING", 0.01), [])],
    [(_trial("t0", "TERMINATED", 0.01), _epochs(0.5)), (_trial("t1", "ERROR", 0.02), [])],
    [(_trial("t0", "TERMINATED", 0.01), [])],
], ids=["no trials", "interrupted before an epoch", "one scored trial", "ended with no epoch"])
def test_a_search_with_little_to_show_still_gets_its_report(histories, monkeypatch, tmp_path):
    from search.report import leaderboard

    monkeypatch.setattr(leaderboard, "trial_histories", lambda spec: histories)
    built = leaderboard.build_report(_spec(), tmp_path)
    assert {p.name for p in built.files} == {
        "leaderboard.csv", "leaderboard.md", "learning_curves.png", "metric_vs_lr.png",
        "parallel_coordinates.png", "importance.json"}
    assert "at least 2" in json.loads((tmp_path / "importance.json").read_text())["note"]


def _asha_spec():
    from search.door.spec import build_spec

    return build_spec(Path("s.py"), {"max_epochs": 4, "grace_period": 1, "reduction_factor": 2},
                      {"lr": tune.loguniform(1e-4, 1e-1)})


def _histories():
    ended = _trial("t3", "TERMINATED", 0.04)
    return [(_trial("t0", "TERMINATED", 0.01), _epochs(0.5, 0.6, 0.7, 0.8)),
            (_trial("t1", "TERMINATED", 0.02), _epochs(0.4, 0.5)),  # stopped at rung 2
            (_trial("t2", "TERMINATED", 0.03), _epochs(0.1)),  # stopped at rung 1
            (ended, _epochs(0.3) + [{"training_iteration": 2, "train_loss": float("nan"),
                                     "diverged": 1, "val_acc": 0.0}])]


def test_each_trial_description_says_how_it_ended_and_why():
    from search.report.leaderboard import rung_cuts, trial_description

    spec, histories = _asha_spec(), _histories()
    cuts = rung_cuts(spec, histories)
    assert cuts == {1: (0.4, 4), 2: (0.6, 3)}  # the top half of those that reached each rung
    said = [trial_description(spec, trial, history, cuts) for trial, history in histories]
    assert said[0] == "**Completed** all 4 epochs. Its best val_acc was 0.8 at epoch 4."
    assert said[1].startswith("**Stopped by ASHA at rung 2** (epoch 2): val_acc 0.5 was below the "
                              "rung's cut 0.6 (the top 1/2 of the 3 trials that reached it went on)")
    assert said[2].startswith("**Stopped by ASHA at rung 1** (epoch 1): val_acc 0.1 was below")
    assert said[3].startswith("**Diverged**: the training loss became nan at epoch 2")


def test_a_trial_ended_with_no_epoch_on_record_is_described_not_a_crash():
    # Seen on S3: the driver was killed before a trial's first result reached the bucket, and Ray
    # restored the trial as ended.
    from search.report.leaderboard import rung_cuts, trial_description

    spec = _asha_spec()
    histories = _histories() + [(_trial("t4", "TERMINATED", 0.05), [])]
    said = trial_description(spec, histories[-1][0], [], rung_cuts(spec, histories))
    assert said == "**Stopped** with no epoch on record."


def test_the_search_description_has_the_top_5_the_best_configuration_and_the_test_accuracy():
    from search.report.leaderboard import Report, leaderboard_rows, search_description

    spec, histories = _asha_spec(), _histories()
    report = Report(leaderboard_rows(spec, histories), histories=histories)
    summary = {"best_trial_id": "t0", "best_config": {"lr": 0.01}, "test_acc": 0.75,
               "test_loss": 0.9}
    text = search_description(spec, report, summary)
    assert text.startswith("Search of `s.py` on cifar10: 4 trials (")
    assert "**Top 4** by val_acc" in text and "| t0    | completed" in text
    assert '**Best configuration** (t0, also in `best_config.json`): `{"lr": 0.01}`' in text
    assert "**Test accuracy** of its best checkpoint: 0.7500" in text
    assert "- `learning_curves.png`:" in text
    assert "**Unfinished**" in search_description(spec, report, None)


# --- one real search, through the CLI -----------------------------------------------------------

REPORT_FILES = {"leaderboard.csv", "leaderboard.md", "learning_curves.png", "metric_vs_lr.png",
                "metric_vs_optimizer.png", "parallel_coordinates.png", "importance.json"}


@pytest.fixture(scope="module")
def searched(image_folder, tmp_path_factory):
    """A finished search of 6 trials of up to 3 epochs; yields (workdir, tracking uri)."""
    work = tmp_path_factory.mktemp("report")
    settings = {
        "dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 6,
        "max_epochs": 3, "grace_period": 1, "reduction_factor": 2, "max_concurrent": 2,
        "seed": 1, "experiment": "report",
    }
    # The low end of lr learns nothing in 3 epochs, so ASHA stops some trials early.
    space = write_space(work / "small.py", settings, """
        "lr": tune.loguniform(1e-5, 0.1),
        "optimizer": tune.choice(["sgd", "adamw"]),
        "width": 0.0625,
        "batch_size": 16,
    """)
    uri = f"sqlite:///{work}/mlflow.db"
    proc = _cli(work, str(space), "--tracking-uri", uri, "--storage", str(work / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, uri


def _cli(work, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], check=False, cwd=work, capture_output=True,
        text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work)},
    )


def _parent(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("report")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` IS NULL")
    assert len(runs) == 1
    return client, runs[0].info.run_id


def _artifacts(client, run_id: str) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, "report"))


@pytest.fixture(scope="module")
def downloaded(searched, tmp_path_factory) -> Path:
    """The parent run's report/ artifacts, downloaded."""
    _, uri = searched
    client, run_id = _parent(uri)
    return Path(client.download_artifacts(run_id, REPORT_DIR, str(tmp_path_factory.mktemp("dl"))))


def _ray_trials(work: Path) -> dict[str, list[dict]]:
    """Each trial's result.json rows, by trial id, straight from Ray's files."""
    folders = [d for d in (work / "results" / "small").iterdir() if (d / "result.json").exists()]
    return {rows[0]["trial_id"]: rows for rows in (
        [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        for d in folders)}


@slow
def test_parent_run_holds_the_report(searched, downloaded):
    names = {p.name for p in downloaded.iterdir()}
    assert REPORT_FILES <= names
    importance = json.loads((downloaded / "importance.json").read_text())
    # 6 trials over lr and optimizer: enough for fANOVA, unless every trial scored the same.
    assert "importances" in importance or importance["note"] == "every trial scored the same"
    assert ("importance.png" in names) == ("importances" in importance)
    if "importances" in importance:
        assert set(importance["importances"]) == {"lr", "optimizer"}


@slow
def test_leaderboard_rows_are_ray_results_best_first(searched, downloaded):
    work, _ = searched
    ray_trials = _ray_trials(work)
    with open(downloaded / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == sorted(ray_trials)
    for row in rows:
        history = ray_trials[row["trial"]]
        best = max(history, key=lambda h: h["val_acc"])
        assert float(row["val_acc"]) == pytest.approx(best["val_acc"])
        assert int(row["best_epoch"]) == best["training_iteration"]
        assert int(row["epochs"]) == len(history)
        assert float(row["final_val_loss"]) == pytest.approx(history[-1]["val_loss"])
        assert float(row["lr"]) == pytest.approx(history[0]["config"]["lr"])
        assert row["status"] == ("completed" if len(history) == 3 else "stopped_early")
    scores = [float(r["val_acc"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert any(r["status"] == "stopped_early" for r in rows)  # ASHA did its job
    markdown = (downloaded / "leaderboard.md").read_text()
    assert all(trial_id in markdown for trial_id in ray_trials)


@slow
def test_plots_are_real_images(downloaded):
    from PIL import Image

    for png in downloaded.glob("*.png"):
        with Image.open(png) as image:
            assert image.width >= 400 and image.height >= 250, png.name
            extrema = image.convert("L").getextrema()
            assert extrema[1] - extrema[0] > 100, png.name  # drawn on, not a blank canvas
        assert png.stat().st_size > 10_000, png.name


@slow
def test_report_command_prints_the_leaderboard_and_logs_the_same_files_again(searched, tmp_path,
                                                                           capsys):
    work, uri = searched
    client, run_id = _parent(uri)
    before = _artifacts(client, run_id)
    assert cli.main(["report", "small", "--storage", str(work / "results"), "--tracking-uri", uri,
                     "--out", str(tmp_path / "out")]) == 0
    stdout = capsys.readouterr().out
    assert "| trial " in stdout and "| val_acc " in stdout
    assert all(trial_id in stdout for trial_id in _ray_trials(work))
    assert REPORT_FILES <= {p.name for p in (tmp_path / "out").iterdir()}
    assert _artifacts(client, run_id) == before  # overwritten, not added beside


@slow
def test_sync_logs_the_report_again(searched):
    from mlflow.utils.file_utils import local_file_uri_to_path

    work, uri = searched
    client, run_id = _parent(uri)
    artifacts = Path(local_file_uri_to_path(client.get_run(run_id).info.artifact_uri))
    (artifacts / REPORT_DIR / "leaderboard.md").unlink()  # as if the search had been older
    proc = _cli(work, "sync", "small", "--storage", str(work / "results"), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert REPORT_FILES <= {Path(p).name for p in _artifacts(client, run_id)}


def test_report_of_an_unknown_search_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["report", "nope", "--storage", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "'nope'" in err
