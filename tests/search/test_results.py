"""The end of a search as printed: the leaderboard in the one table renderer of search/."""

from __future__ import annotations

from search.report.results import SearchResults


def test_the_printed_leaderboard_is_the_report_s_markdown_table_best_first():
    rows = [{"trial": f"t_{i}", "status": "completed", "epochs": 4, "val_acc": v, "lr": 0.1,
             "best_epoch": 4} for i, v in enumerate((0.9, 0.8, 0.7))]
    results = SearchResults("val_acc", rows, "t_0", {"lr": 0.1}, 0.9, 0.85, 0.4, "/ckpt", ["lr"])
    lines = results.table(top=2).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "trial", "status", "epochs", "val_acc", "lr"]
    assert len(lines) == 4 and "t_0" in lines[2] and "t_1" in lines[3]  # header, rule, 2 rows
