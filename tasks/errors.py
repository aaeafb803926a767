"""The one root of labelloop's own errors (issue 15).

Why a root: every error labelloop raises on purpose is worded for the person at the terminal
(it names the file, row, key or service, never a password), and the CLI turns any of them into
one line and exit code 2 without a traceback. Catching ``LabelloopError`` instead of a list of
classes means a new error class cannot be forgotten there. It lives in ``tasks`` because every
layer may import ``tasks`` and ``tasks`` imports no other layer.

The subclasses keep their old builtin bases (``ValueError``, ``RuntimeError``) so code that
caught those still does.
"""

from __future__ import annotations


class LabelloopError(Exception):
    """An error labelloop raised on purpose, with a message for the user.

    ``exit_code`` is what the CLI exits with: 2 (bad input, config or a service the user must
    fix) unless a subclass says otherwise.
    """

    exit_code: int = 2
