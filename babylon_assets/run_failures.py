"""Why a run failed, in the words a person can act on: the first failed step's error, or the run's own
failure message (e.g. run monitoring's "the run's process is gone")."""

from collections.abc import Iterable

from dagster import DagsterEvent
from dagster_shared.error import SerializableErrorInfo

from babylon_assets.errors import BabylonError


def _our_error_names(kind: type[BaseException] = BabylonError) -> set[str]:
    return {kind.__name__}.union(*(_our_error_names(sub) for sub in kind.__subclasses__()))


def _error_text(error: SerializableErrorInfo | None) -> str:
    """The outermost error raised by our code or a library, skipping Dagster's wrappers.

    Our errors explain their cause in words (disk full, which window, what to do) and keep the raw
    cause only as `__cause__`; reporting the innermost error would cut that explanation away.
    """
    while error is not None and error.cls_name is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    if error is None:
        return "no error recorded"
    message = error.message.strip().splitlines()[0]
    # The message starts with the class's qualified name; ours say what happened without it.
    qualified, _, text = message.partition(": ")
    if error.cls_name in _our_error_names() and qualified.split(".")[-1] == error.cls_name:
        return text
    return message


def failure_text(events: Iterable[DagsterEvent]) -> str | None:
    """`step: reason` for the first failed step, else the run failure's message, else None."""
    run_failure: str | None = None
    for event in events:
        if event.is_step_failure and event.step_failure_data is not None:
            return f"{event.step_key}: {_error_text(event.step_failure_data.error)}"
        if event.is_run_failure and run_failure is None and event.message:
            run_failure = event.message.strip().splitlines()[0]
    return run_failure
