"""The one exception type that means "the user gave us something we cannot use".

Everything that can be fixed by the person at the keyboard (a missing corpus, a bad
config key, a truncated checkpoint, ...) raises :class:`UserError`. The CLI and the
benchmark harness turn it into one line on stderr and exit status 2, never a traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""

    exit_code = 2
