"""Exceptions the library raises for bad user input.

Every check of user input raises :class:`InputError` (a ``ValueError``) with a one-line message that
names the problem. The CLI turns it into that message on stderr and exit code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: wrong shape, wrong type, bad file, unknown option, ...

    The message is one line and names the offending thing (file, row, key, ...).
    """
