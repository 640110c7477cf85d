"""One user-facing error type: the CLI prints its message and exits 2, without a traceback.

Raise it (or a subclass) for bad input a person can fix; the message names the problem and the fix.
Programming errors stay ordinary exceptions so their tracebacks are not hidden.
"""


class UserError(Exception):
    """Bad input, missing file, unavailable resource: message says what and how to fix it."""
