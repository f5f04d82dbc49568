"""Tests of benchmarks/run.py and benchmarks/harness.py: the driver lists every section, runs a
subset at --quick sizes, and renders their rows and targets as one markdown file."""

from __future__ import annotations

import json

import pytest

from benchmarks import run
from benchmarks.harness import Report, Table, Target, Verdict, render
from benchmarks.sections import BY_NAME, RESULTS_FILES, SECTIONS


def test_list_names_every_section_its_results_file_and_targets(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for section in SECTIONS:
        assert f"  {section.name} " in out, section.name
        for target in section.targets:
            assert target.what in out
    for results in RESULTS_FILES:
        assert out.count(f"{results} (") == 1


def test_each_section_is_declared_once_with_a_known_results_file_and_both_sizes():
    assert len(BY_NAME) == len(SECTIONS)
    for section in SECTIONS:
        assert section.results in RESULTS_FILES, section.name
        assert section.full is not None and section.quick is not None, section.name


def test_unknown_sections_are_refused_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        run.main(["--sections", "compute,computer"])
    err = capsys.readouterr().err
    assert "unknown computer" in err and "compute, trial" in err


def test_a_target_is_met_by_its_operator_and_unmeasured_is_not_a_verdict():
    faster = Target("trial >= 0.9 of the limit", ">=", 0.9)
    assert faster.check(0.95, "0.95").met is True
    assert faster.check(0.5, "0.50").met is False
    assert faster.check(None, "not run").met is None
    assert Target("within a point", "within", 1.0).check(-0.5, "-0.5").met is True
    with pytest.raises(ValueError, match="expected one of"):
        Target("x", "=>", 1)


def test_one_renderer_puts_every_verdict_in_one_table_then_each_section():
    reports = [Report("1. First", ["Some text.", Table(["a", "b"], [[1, 1234.5], ["x", 0.123]])],
                      [Verdict("fast enough", "2x", True)]),
               Report("2. Second", ["More."], [Verdict("small enough", "-", None),
                                               Verdict("accurate", "0.1", False)])]
    meta = {"command": "python -m benchmarks.run", "cwd": "/repo", "date": "today", "quick": True,
            "machine": {"machine": "a CPU"}}
    markdown = render("Title", meta, reports)
    assert markdown.startswith("# Title\n") and "QUICK RUN" in markdown
    assert ("| fast enough | 2x | **yes** |\n| small enough | - | n/a |\n| accurate | 0.1 | **NO** |"
            in markdown)
    assert markdown.index("## Targets") < markdown.index("## 1. First") < markdown.index("## 2. Second")
    assert "| a | b |\n|---|---|\n| 1 | 1,234 |\n| x | 0.123 |" in markdown


def test_a_tiny_section_runs_and_renders_its_rows_with_its_targets(image_folder, tmp_path, capsys):
    assert run.main(["--sections", "compute,trial", "--quick", "--data-dir", str(image_folder),
                     "--out", str(tmp_path)]) == 0
    raw = json.loads((tmp_path / "results-quick.json").read_text())
    assert raw["sections"] == ["compute", "trial"] and raw["quick"]
    assert len(raw["compute"]) == 4 and raw["trial"]["images_per_s"] > 0
    assert raw["sizes"]["trial"]["width"] == BY_NAME["trial"].quick.width
    markdown = (tmp_path / "RESULTS-quick.md").read_text()
    assert "| precision | layout | threads | timed steps | images/s |" in markdown
    assert "| fp32 | nchw | 1 | 2 |" in markdown
    target = BY_NAME["trial"].targets[0].what
    assert f"| {target} (measured right before and after it) |" in markdown
    assert not (tmp_path / "RESULTS.md").exists()  # a quick run leaves the real results alone

    # The JSON renders again to the same file.
    (tmp_path / "RESULTS-quick.md").unlink()
    assert run.main(["--render", str(tmp_path / "results-quick.json")]) == 0
    assert (tmp_path / "RESULTS-quick.md").read_text() == markdown


def test_merge_keeps_the_sections_not_run_again(image_folder, tmp_path):
    common = ["--quick", "--data-dir", str(image_folder), "--out", str(tmp_path)]
    assert run.main(["--sections", "compute", *common]) == 0
    first = json.loads((tmp_path / "results-quick.json").read_text())
    assert run.main(["--sections", "trial", "--merge", *common]) == 0
    merged = json.loads((tmp_path / "results-quick.json").read_text())
    assert merged["sections"] == ["compute", "trial"]
    assert merged["compute"] == first["compute"] and merged["kept"] == {"compute": first["date"]}
    assert "Section `compute`: kept from the run of" in (tmp_path / "RESULTS-quick.md").read_text()
