"""Progress lines for a person watching the terminal; logs and pipes get only outcomes."""

import os
import sys
from typing import TextIO


def _terminal() -> TextIO | None:
    """This process's stderr if it is a terminal, as found at import: Dagster points stderr at its
    compute log files while a step runs, so a step's progress goes to this copy of it instead."""
    if not sys.stderr.isatty():
        return None
    return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)


_TERMINAL = _terminal()


def progress(line: str) -> None:
    """`line` on the terminal when stderr is one, else nothing."""
    if _TERMINAL is not None:
        print(line, file=_TERMINAL)
