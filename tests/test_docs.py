"""docs/cluster.md's tune-run commands stay in step with the command line: each parses, with the flags
it shows, by tune-run's own parsers. (The searches they start are run by tests/search/test_cluster.py
and test_storage.py with these flags against a cluster, S3 and an MLflow server on this machine.)"""

from __future__ import annotations

import re
import shlex

import pytest

from search import cli
from tests.conftest import REPO

DOC = REPO / "docs" / "cluster.md"


def _commands(prefix: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines()
            if line.strip().startswith(prefix)]


def test_the_doc_shows_the_commands_a_cluster_user_needs():
    shown = " ".join(_commands("tune-run"))
    for needed in ("--address", "--storage s3://", "--tracking-uri http://", "--resume", "ls",
                   "sync", "report", "predict"):
        assert needed in shown, needed
    assert any("mlflow server" in c and "--artifacts-destination s3://" in c
               for c in _commands("mlflow"))
    assert _commands("ray start --head") and _commands("ray start --address")


@pytest.mark.parametrize("command", _commands("tune-run"))
def test_each_tune_run_command_of_the_doc_parses(command, capsys):
    argv = shlex.split(command)[1:]
    subcommands = {"sync": cli.sync_parser, "report": cli.report_parser, "ls": cli.ls_parser,
                   "predict": cli.predict_parser, "ui": cli.ui_parser}
    make = subcommands.get(argv[0], cli.parser)
    args = make().parse_args(argv[1:] if argv[0] in subcommands else argv)  # exits 2 if not
    if getattr(args, "storage", None):
        assert args.storage.startswith("s3://")
