"""Facts written once: each literal below stands in one module of the code (core/, trainables/,
search/), the fact's source, and every other module imports it from there. A second copy is how
two places drift apart (subset's type, the cache folder, the default tracking store did)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

CODE = ("core", "trainables", "search")
# literal -> the one module that may spell it
SOURCES = {
    '"training_iteration"': "trainables/metrics.py",  # EPOCH
    "sqlite:///mlflow.db": "search/record/__init__.py",  # DEFAULT_TRACKING_URI
    '".cache"': "core/cache.py",  # cache_root
    '"grid_search"': "search/door/domains.py",  # is_grid, domain_choices
    "isinstance(value, bool) and math.isfinite": "trainables/metrics.py",  # finite
}


def _spelling(literal: str) -> list[str]:
    return sorted(str(path.relative_to(REPO)) for folder in CODE
                  for path in (REPO / folder).rglob("*.py")
                  if literal in path.read_text() or literal.replace('"', "'") in path.read_text())


@pytest.mark.parametrize("literal", SOURCES)
def test_a_fact_is_spelt_in_its_source_only(literal):
    assert _spelling(literal) == [SOURCES[literal]]


def test_epoch_is_rays_count_of_reports():
    from ray.tune.result import TRAINING_ITERATION

    from trainables.metrics import EPOCH

    assert EPOCH == TRAINING_ITERATION
