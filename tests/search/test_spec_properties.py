"""Property tests of the door: bad space files and flags generated from the tables themselves.

For every hyperparameter (core/hparams.py) and setting (search/door/spec.py), hypothesis draws a wrong
type, a value just outside a bound, a value far outside it, an unknown choice, or a Ray Tune domain
whose values leave the range (and for flags, the same values as text). Each must be refused with
exit code 2 and one line naming the field or flag, with nothing created. Run in-process through
`search.cli.main` (the hand-written corpus in test_bad_input.py also runs a real process).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.hparams import HPARAMS, HParam
from search.cli import OVERRIDE_FLAGS, main
from search.door.spec import SETTINGS

pytestmark = pytest.mark.bad_input

GOOD_SETTINGS = {"dataset": "digits", "num_samples": 2, "max_epochs": 4}
GOOD_DIMENSION = '"lr": tune.loguniform(1e-3, 1e-1)'
EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# Settings whose values are free text or paths, checked by the preflight instead of a range.
FREE_TEXT = {"name", "data_dir", "storage", "tracking_uri", "experiment", "register"}


def _numeric(h: HParam) -> bool:
    return h.choices is None and h.kind is not str


def _outside(h: HParam) -> st.SearchStrategy:
    """Numbers just outside and far outside each finite bound of `h`."""
    options = []
    step = 1 if h.kind is int else 1e-6
    if math.isfinite(h.low):
        options.append(st.just(h.low) if h.low_open else st.just(h.low - step))
        options.append(st.floats(max_value=h.low - step, min_value=h.low - 1e6,
                                 allow_nan=False).map(lambda v: int(v) if h.kind is int else v))
    if math.isfinite(h.high):
        options.append(st.just(h.high) if h.high_open else st.just(h.high + step))
        options.append(st.floats(min_value=h.high + step, max_value=h.high + 1e6,
                                 allow_nan=False).map(lambda v: math.ceil(v) if h.kind is int else v))
    return st.one_of(options) if options else st.nothing()


def bad_values(h: HParam) -> st.SearchStrategy:
    """Fixed values `h` must refuse, as Python source."""
    wrong_types = [st.just('"fast"'), st.just("[1, 2]"), st.just("{'a': 1}")]
    if not h.optional:
        wrong_types.append(st.just("None"))
    if h.choices is not None:
        unknown = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
            lambda v: v not in h.choices)
        return st.one_of(*wrong_types[1:], unknown.map(repr), st.just("3.5"))
    if h.kind is str:
        return st.one_of(st.just("3"), st.just("[1, 2]"))
    outside = _outside(h).map(repr)
    whole = [st.just("2.5")] if h.kind is int and h.in_range(2.5) else []
    return st.one_of(*wrong_types, st.just("float('nan')"), outside, *whole)


def bad_domains(h: HParam) -> st.SearchStrategy:
    """Ray Tune domains of `h` that can yield a value it must refuse, as Python source."""
    if not _numeric(h):
        return st.one_of(st.just("tune.uniform(0, 1)"), st.just("tune.choice([])"),
                         st.just(f"tune.grid_search([{'[]' if h.choices else '1'}])"))
    options = [st.just("tune.choice([])"), st.just("tune.grid_search([])"),
               _outside(h).map(lambda v: f"tune.choice([{v!r}])")]
    if math.isfinite(h.low) or math.isfinite(h.high):
        options.append(st.just("tune.randn(1.0, 0.5)"))
    if h.kind is int and math.isfinite(h.high):
        top = int(h.high)
        options.append(st.just(f"tune.randint({top}, {top + 2})"))  # can draw top + 1
        options.append(st.just(f"tune.qrandint({top - top % 2}, {top - top % 2 + 2}, 2)"))
    if h.kind is not int and math.isfinite(h.low):
        inside = h.low + 1e-3 if not math.isfinite(h.high) else (h.low + h.high) / 2
        start = h.low if h.low_open else h.low - 0.5
        options.append(st.just(f"tune.uniform({start!r}, {inside!r})"))
    if h.kind is not int and math.isfinite(h.high):
        options.append(st.just(f"tune.uniform({h.high - 0.25 * (h.high - h.low)!r}, "
                               f"{h.high + 0.5!r})"))
    return st.one_of(options)


@contextlib.contextmanager
def fresh_folder():
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(here)


def refused(space_source: str, flags: list[str], names: str) -> None:
    with fresh_folder() as folder:
        (folder / "bad.py").write_text(space_source)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = main(["bad.py", *flags])
            except SystemExit as e:  # argparse's own errors
                code = e.code
        text = err.getvalue().strip()
        assert code == 2, (code, text, space_source, flags)
        assert len(text.splitlines()) == 1 and text.startswith("tune-run: error: "), text
        assert names in text, (names, text)
        assert [p.name for p in folder.iterdir()] == ["bad.py"]  # nothing created


def space_file(settings_: dict, space_lines: list[str]) -> str:
    body = ",\n    ".join(space_lines)
    return f"from ray import tune\n\nsettings = {settings_!r}\n\nspace = {{\n    {body}\n}}\n"


@pytest.fixture(autouse=True)
def no_tracking_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@EXAMPLES
@given(data=st.data(), name=st.sampled_from(sorted(HPARAMS)))
def test_bad_fixed_hyperparameter_is_refused(data, name):
    value = data.draw(bad_values(HPARAMS[name]))
    lines = [GOOD_DIMENSION] if name != "lr" else ['"dropout": tune.uniform(0.0, 0.5)']
    refused(space_file(GOOD_SETTINGS, [*lines, f'"{name}": {value}']), [], f"space.{name}")


@EXAMPLES
@given(data=st.data(), name=st.sampled_from(sorted(HPARAMS)))
def test_domain_that_can_leave_the_range_is_refused(data, name):
    domain = data.draw(bad_domains(HPARAMS[name]))
    lines = [GOOD_DIMENSION] if name != "lr" else []
    refused(space_file(GOOD_SETTINGS, [*lines, f'"{name}": {domain}']), [], f"space.{name}")


@EXAMPLES
@given(data=st.data(), name=st.sampled_from(sorted(set(SETTINGS) - FREE_TEXT)))
def test_bad_setting_is_refused(data, name):
    value = data.draw(bad_values(SETTINGS[name]))
    text = space_file(GOOD_SETTINGS | {"_": 0}, [GOOD_DIMENSION]).replace(
        "'_': 0", f"{name!r}: {value}")
    refused(text, [], f"settings.{name}")


@EXAMPLES
@given(data=st.data(), name=st.sampled_from([n for n in OVERRIDE_FLAGS if n not in FREE_TEXT]))
def test_bad_flag_is_refused(data, name):
    h = SETTINGS[name]
    value = data.draw(_outside(h).map(str) if _numeric(h) else st.sampled_from(["nope", "3.5"]))
    flag = f"--{name.replace('_', '-')}"
    refused(space_file(GOOD_SETTINGS, [GOOD_DIMENSION]), [flag, value], flag)


IDENTIFIER = st.from_regex(r"[a-z][a-z_]{2,14}", fullmatch=True)


@EXAMPLES
@given(key=IDENTIFIER.filter(lambda k: k not in HPARAMS and k not in SETTINGS))
def test_unknown_names_are_refused(key):
    refused(space_file(GOOD_SETTINGS, [GOOD_DIMENSION, f'"{key}": 1']), [], f"space.{key}")
    text = space_file(GOOD_SETTINGS | {key: 1}, [GOOD_DIMENSION])
    refused(text, [], f"settings.{key}")
