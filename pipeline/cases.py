"""The outcome of one case in a batch command (``preprocess``, ``segment``): done, skipped or failed, and why.

A batch command never stops at a bad case: it reports each one in one line and goes on; the command's exit status
says whether any failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["STATUSES", "CaseResult", "count_statuses"]

STATUSES = ("done", "skipped", "failed")


@dataclass
class CaseResult:
    """Outcome of one case.

    Attributes:
        case: what the case is: a series uid (preprocess) or the input's path (segment).
        status: ``"done"``, ``"skipped"`` (outputs already there) or ``"failed"``.
        message: why it failed, or notes for the user when it is done.
        output: the main file written (segment: the mask).
        runtime_s: seconds spent on the case.
        timings: seconds per stage.
        warnings: lines to show the user even though the case is done.
    """

    case: str
    status: str
    message: str = ""
    output: str = ""
    runtime_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def count_statuses(results: Iterable[CaseResult]) -> dict[str, int]:
    """``{"done": n, "skipped": n, "failed": n}``."""
    results = list(results)
    return {status: sum(r.status == status for r in results) for status in STATUSES}
