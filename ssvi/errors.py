"""The one base class of errors a user can fix: the command line prints them as one line and exits 2.

    raise UserError("what went wrong and how to fix it, in one sentence")

The CLI prints ``ssvi: error: <message>`` (and appends it to the run's ``train.log`` when there is one);
a traceback appears only with ``--debug``. Anything that is not a ``UserError`` is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """An error whose message names the cause and the fix."""


class Terminated(BaseException):
    """SIGTERM, raised by the command line's signal handler the way Python raises KeyboardInterrupt for SIGINT
    (a BaseException, so no ``except Exception`` swallows it)."""


class Interrupted(Exception):
    """A command stopped by Ctrl-C (SIGINT) or SIGTERM; the message says where and what re-running does.
    The command line prints it as one line and exits 128 + the signal number (130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def signal_of(error: BaseException) -> int:
    """The signal number behind KeyboardInterrupt (SIGINT) or Terminated (SIGTERM)."""
    import signal
    return signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
