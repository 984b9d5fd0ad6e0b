"""The markdown the UI shows: tables that survive recorded text, dashes for missing numbers, score bins."""

import pandas as pd
import pytest

from babylon_assets.metadata import counts_by, markdown_table, score_distribution


def rows_of(table: str) -> list[list[str]]:
    """The body rows' cells (header and separator dropped); escaped pipes stay inside their cell."""
    lines = table.splitlines()[2:]
    return [[cell.strip() for cell in line.strip().strip("|").replace("\\|", "\0").split("|")] for line in lines]


def test_counts_are_most_frequent_first_and_text_cannot_break_the_table() -> None:
    reasons = ["bad | pipe", "steps is empty", "steps is empty", "two\nlines"]
    table = markdown_table(counts_by(reasons, label="reason", count_label="trajectories"))
    assert table.splitlines()[0].split() == ["|", "reason", "|", "trajectories", "|"]
    assert rows_of(table) == [["steps is empty", "2"], ["bad \0 pipe", "1"], ["two lines", "1"]]


def test_missing_numbers_show_as_a_dash_and_formats_apply_per_column() -> None:
    frame = pd.DataFrame({"step": [1, 2], "loss": [0.5, None], "margin": [None, 0.25]})
    table = markdown_table(frame, floatfmt=("", ".6f", ".2f"))
    assert rows_of(table) == [["1", "0.500000", "—"], ["2", "—", "0.25"]]
    assert "nan" not in table


def test_score_distribution_bins_every_tenth_including_both_ends() -> None:
    frame = score_distribution([0.0, 0.1, 0.3, 0.29, 0.95, 1.0], count_label="trajectories")
    assert frame["score"].tolist()[0] == "[0.0, 0.1)"
    assert frame["score"].tolist()[-1] == "[0.9, 1.0]"
    assert frame["trajectories"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 2]
    exact = score_distribution([k / 100 for k in range(101)], bins=100, count_label="n")
    assert exact["n"].tolist() == [1] * 99 + [2]  # 0.99 and 1.0 share the closed last bin


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_scores_outside_the_unit_interval_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        score_distribution([0.5, bad], count_label="trajectories")
