"""A record of when expensive work starts, for tests that check "this failed before any work".

Set ``VLA_FLOW_WORK_LOG=FILE`` and each expensive stage appends one line to FILE as it starts: ``model``
(a frozen CLIP tower is built), ``simulator`` (a LIBERO env is created), ``worker`` (a simulator worker
process is started). A command that must refuse bad input before any of these leaves FILE absent. Why not a
wall-clock bound: start-up time varies several-fold with machine load, and a timed assertion then fails for
the wrong reason; this asks the question the test means. Unset (the default), ``mark`` does nothing.
"""
from __future__ import annotations

import os

ENV_VAR = "VLA_FLOW_WORK_LOG"


def mark(what: str) -> None:
    """Append ``what`` (one word) to the file named by ``$VLA_FLOW_WORK_LOG``, if set."""
    path = os.environ.get(ENV_VAR)
    if path:
        with open(path, "a") as fh:
            fh.write(f"{what} {os.getpid()}\n")
