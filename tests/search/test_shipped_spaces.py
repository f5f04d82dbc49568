"""Every space file the repository ships passes the door, as written and with --quick."""

from __future__ import annotations

import pytest

from search.door.spec import load_spec
from tests.conftest import REPO

SPACES = sorted((REPO / "spaces").glob("*.py"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_a_shipped_space_file_passes_the_door(path, quick):
    spec = load_spec(path, quick=quick)
    assert spec.dimensions


def test_the_own_model_space_finds_its_model_beside_it():
    spec = load_spec(REPO / "spaces" / "own_model.py")
    assert spec.model == f"{REPO / 'spaces' / 'models' / 'tiny.py'}:build"
