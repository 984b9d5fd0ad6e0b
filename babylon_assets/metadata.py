"""Markdown tables and score distributions for asset metadata, built with pandas.

The one place that turns rows into the markdown the Dagster UI shows: cells are escaped so a `|` or a
line break in recorded text cannot break a table, and a missing number shows as a dash, never `nan`.
"""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # pandas takes half a second to import; every Dagster process loads this module, few build a table.
    import pandas as pd


MISSING = "—"
SCORE_BINS = 10


def _cell(value: object) -> object:
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\n", " ")
    if isinstance(value, float) and math.isnan(value):
        return None  # tabulate prints None as `missingval`, but NaN as "nan"
    return value


def markdown_table(frame: "pd.DataFrame", *, floatfmt: str | Sequence[str] = "g") -> str:
    """The frame as a markdown table without its index; `floatfmt` is one format or one per column.

    Numbers are right-aligned, text left-aligned; missing values show as a dash.
    """
    import pandas as pd

    # dtype=object keeps None as None: DataFrame.map would infer float64 and turn it back into NaN.
    cells = pd.DataFrame({column: [_cell(value) for value in frame[column]] for column in frame.columns}, dtype=object)
    return cells.to_markdown(index=False, floatfmt=floatfmt, missingval=MISSING)


def counts_by(values: Sequence[str], *, label: str, count_label: str) -> "pd.DataFrame":
    """How often each value occurs: columns `label` and `count_label`, most frequent first, ties in first-seen order."""
    import pandas as pd

    counts = pd.Series(list(values), dtype=object).value_counts(sort=False).sort_values(ascending=False, kind="stable")
    return pd.DataFrame({label: counts.index.astype(str), count_label: counts.to_numpy()})


def score_distribution(scores: Sequence[float], *, bins: int = SCORE_BINS, count_label: str) -> "pd.DataFrame":
    """Scores in [0, 1] counted per bin of width 1/bins (the last bin includes 1.0), every bin listed.

    A score outside [0, 1] is a scoring defect, not something to bin: ValueError.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    import pandas as pd

    series = pd.Series(list(scores), dtype=float)
    outside = series[(series < 0) | (series > 1) | series.isna()]
    if not outside.empty:
        raise ValueError(f"scores must lie in [0, 1]; got {outside.tolist()[:5]}")
    # Integer bin indices (not float edges), rounded first so a score of exactly 0.3 lands in [0.3, 0.4)
    # whatever the float error of 0.3 * bins.
    index = (series * bins).round(9).apply(math.floor).clip(upper=bins - 1)
    counts = index.value_counts().reindex(range(bins), fill_value=0)
    labels = [
        f"[{low / bins:.{_decimals(bins)}f}, {(low + 1) / bins:.{_decimals(bins)}f}{']' if low == bins - 1 else ')'}"
        for low in range(bins)
    ]
    return pd.DataFrame({"score": labels, count_label: counts.to_numpy()})


def _decimals(bins: int) -> int:
    """Enough decimals to tell the bin edges apart: 1 for tenths, 2 for hundredths."""
    return max(1, math.ceil(math.log10(bins)))
