"""The one base class of errors a user can fix: the command line prints them as one line and exits 2.

    raise UserError("what went wrong and how to fix it, in one sentence")

The CLI prints ``ssvi: error: <message>`` (and appends it to the run's ``train.log`` when there is one);
a traceback appears only with ``--debug``. Anything that is not a ``UserError`` is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """An error whose message names the cause and the fix."""
