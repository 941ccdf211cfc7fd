"""The one exception type for bad user input (files, arguments, data that cannot be used).

Raising :class:`InputError` means "the user can fix this": command-line entry points print its
message as one line and exit non-zero, without a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input. The message names the file or argument and what was expected."""
