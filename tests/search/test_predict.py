"""`tune-run predict`: a search's best model, as MLflow serves it, on image files of any size."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cli(work, uri, *args):
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args, "--storage", str(work / "results"),
         "--tracking-uri", uri],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work)},
    )


def test_predict_prints_the_top_3_classes_of_image_files_of_any_size(finished_search, tmp_path):
    work, uri, _ = finished_search
    wide, grey = tmp_path / "wide.png", tmp_path / "grey.jpg"
    Image.new("RGB", (40, 17), (200, 0, 0)).save(wide)
    Image.new("L", (5, 9), 90).save(grey)
    proc = _cli(work, uri, "predict", "tiny", str(wide), str(grey))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(wide), str(grey)]
    for line in lines:  # 'wide.png: class0 0.912, class2 0.051, class1 0.037'
        ranked = re.findall(r"(class\d) (\d\.\d{3})", line)
        assert len(ranked) == 3 and len({c for c, _ in ranked}) == 3
        assert [float(p) for _, p in ranked] == sorted((float(p) for _, p in ranked), reverse=True)


@pytest.mark.bad_input
def test_predict_refuses_an_unreadable_file_or_a_missing_search(finished_search, tmp_path):
    work, uri, _ = finished_search
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    for args, named in ((("tiny", str(notes)), "notes.jpg"), (("nosuch", str(notes)), "nosuch")):
        proc = _cli(work, uri, "predict", *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and named in proc.stderr, proc.stderr
