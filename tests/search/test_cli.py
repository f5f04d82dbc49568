"""The command line: flags are checked as flags, bad input is one line and exit code 2 from a real
process, and `tune-run ui` binds this machine only unless told otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search import cli
from tests.conftest import REPO
from tests.search.conftest import refuse_space_file, space_file

# (id, space file text, CLI flags, fragments the error must name)
BAD_FLAGS = [
    ("flag-zero-trials", space_file(), ["--num-samples", "0"], ["--num-samples"]),
    ("flag-not-a-number", space_file(), ["--num-samples", "many"], ["--num-samples", "'many'"]),
    ("flag-negative-epochs", space_file(), ["--max-epochs", "-1"], ["--max-epochs"]),
    ("flag-unknown-search", space_file(), ["--search", "grid"], ["--search", "'random'"]),
    ("flag-negative-gpus", space_file(), ["--gpus-per-trial", "-1"], ["--gpus-per-trial"]),
    ("flag-zero-cpus", space_file(), ["--cpus-per-trial", "0"], ["--cpus-per-trial"]),
    ("flag-negative-concurrency", space_file(), ["--max-concurrent", "-2"], ["--max-concurrent"]),
    ("flag-name-escapes", space_file(), ["--name", "../x"], ["settings.name", "no path"]),
    ("flag-name-absolute", space_file(), ["--name", "/etc"], ["settings.name", "no path"]),
    ("flag-unknown", space_file(), ["--epochs", "3"], ["unrecognized arguments: --epochs"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("case_id,text,flags,fragments", BAD_FLAGS, ids=[c[0] for c in BAD_FLAGS])
def test_bad_flag_is_refused(case_id, text, flags, fragments, workdir, capsys):
    refuse_space_file(text, flags, fragments, workdir, capsys)


def test_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "bad.py").write_text(space_file(space='{"optimizer": tune.choice(["admaw"])}'))
    proc = subprocess.run([sys.executable, "-m", "search.cli", "bad.py"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("tune-run: error: bad.py: space.optimizer: 'admaw' is not one "
                                   "of 'sgd', 'adam', 'adamw', 'adagrad', 'adadelta', 'rmsprop'; "
                                   "did you mean 'adamw'?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


@pytest.fixture
def ran(monkeypatch) -> list[list[str]]:
    """The commands `subprocess.run` was given; none is started."""
    import subprocess

    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, **_: commands.append(command) or
                        subprocess.CompletedProcess(command, 0))
    return commands


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_ui_binds_this_machine_only_by_default(ran, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["ui"]) == 0
    assert ran[0][1:4] == ["-m", "mlflow", "ui"]
    assert _flag(ran[0], "--host") == "127.0.0.1" and _flag(ran[0], "--port") == "5000"
    assert _flag(ran[0], "--backend-store-uri") == "sqlite:///mlflow.db"
    # The URL comes first, before the server's own output.
    assert capsys.readouterr().out.startswith(
        "MLflow UI of sqlite:///mlflow.db at http://127.0.0.1:5000")


def test_ui_takes_the_store_from_the_environment_and_host_and_port_from_flags(ran, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    assert cli.main(["ui", "--host", "0.0.0.0", "--port", "8080"]) == 0
    assert _flag(ran[0], "--backend-store-uri") == "sqlite:////tmp/x.db"
    assert _flag(ran[0], "--host") == "0.0.0.0" and _flag(ran[0], "--port") == "8080"
    assert cli.ui_command("u", "127.0.0.1", 5000) == [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", "u", "--host", "127.0.0.1",
        "--port", "5000"]


def test_ui_refuses_a_port_out_of_range_in_one_line(ran, capsys):
    assert cli.main(["ui", "--port", "70000"]) == cli.EXIT_BAD_INPUT
    assert not ran and capsys.readouterr().err.strip().count("\n") == 0
