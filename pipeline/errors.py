"""One-line messages for expected errors: in reports, on the command line and inside bundle runs.

An expected error is one the user can fix: :class:`transforms.errors.InputError`,
:class:`pipeline.device.DeviceError`, or weights that do not fit the network. MONAI's config machinery
wraps every exception raised while evaluating an expression in ``RuntimeError("Failed to evaluate ...")``
and ``fire`` lets it escape as a long traceback, so a missing dataset folder would bury its one useful
sentence. :func:`install_excepthook` (called by the bundle configs' ``initialize`` and by
``pipeline.cli.main``; importing does nothing) prints ``error: <message>`` alone for an uncaught expected
error and the process exits with status 1; any other exception keeps Python's full traceback.
``VNET_LUNG_TRACEBACK=1`` shows tracebacks always.
"""

from __future__ import annotations

import os
import re
import sys
from types import TracebackType

__all__ = ["cause_message", "expected_error_message", "excepthook", "install_excepthook", "one_line"]

#: the hook that was in place when :func:`install_excepthook` ran; unexpected errors go to it
_previous_hook = None


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _state_dict_message(text: str) -> str | None:
    if "Error(s) in loading state_dict" not in text:
        return None
    parts = []
    for kind in ("Missing key(s)", "Unexpected key(s)", "size mismatch"):
        if kind in text:
            m = re.search(re.escape(kind) + r"[^:]*:\s*(.*)", text)
            detail = (m.group(1) if m else "").strip()
            parts.append(f"{kind.lower()}: {detail[:300]}{'...' if len(detail) > 300 else ''}")
    return ("the checkpoint does not fit this network (another architecture or width?): " + "; ".join(parts)
            + ". Check network_def (e.g. init_filters) against the run that saved it.")


def expected_error_message(exc: BaseException) -> str | None:
    """The one-line message for an expected error in ``exc``'s chain, else ``None``."""
    from transforms.errors import InputError

    for err in _chain(exc):
        if isinstance(err, InputError) or type(err).__name__ == "DeviceError":
            return " ".join(str(err).split("\n")).strip()
        msg = _state_dict_message(str(err))
        if msg:
            return msg
    return None


_WRAPPED_INPUT_ERROR = re.compile(r"(?:InputError|DeviceError): (.+)")


def cause_message(exc: BaseException) -> str:
    """The most useful one-line description of ``exc`` for a report: the expected error in its chain, an
    ``InputError`` quoted inside a wrapper's text (MONAI's ``LoadImage`` re-raises reader errors as text), else
    the innermost exception's type and last line (``RuntimeError: applying transform ...`` says nothing)."""
    msg = expected_error_message(exc)
    if msg:
        return msg
    chain = list(_chain(exc))
    for err in chain:
        m = _WRAPPED_INPUT_ERROR.search(str(err))
        if m:
            return m.group(1).strip()
    inner = chain[-1]
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return f"{type(inner).__name__}: {lines[-1] if lines else ''}".strip()


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """Print expected errors as one line; defer everything else to the previous hook."""
    message = None if os.environ.get("VNET_LUNG_TRACEBACK") else expected_error_message(exc)
    if message is None:
        (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
        return
    print(f"error: {message}", file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Make :func:`excepthook` the process's ``sys.excepthook`` (idempotent); the hook it replaces handles the rest."""
    global _previous_hook
    if sys.excepthook is not excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = excepthook


def one_line(message: str) -> str:
    """``message`` with its lines joined by single spaces (error texts for one-line reports)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())
