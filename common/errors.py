"""The one exception type that means "the user gave us something we cannot use", and the
small pieces of command-line plumbing that turn it into one line and exit status 2.

Everything that can be fixed by the person at the keyboard (a missing corpus, a bad
config key, a truncated checkpoint, ...) raises :class:`UserError`. The CLI and the
benchmark harness turn it into one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from common import signals


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""

    exit_code = 2

    @property
    def problem(self) -> str:
        """The message without its advice (what follows the first '; '), for a caller that
        quotes it inside its own message with its own fix."""
        return str(self).split("; ")[0]

    @property
    def advice(self) -> str:
        """What follows the problem: the fix."""
        parts = str(self).split("; ", 1)
        return parts[1] if len(parts) > 1 else ""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """The long options ``parser`` knows (without --help)."""
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help")


def reject_unknown_flags(extra: list[str], options: list[str], keys: list[str]) -> None:
    """``extra`` is what argparse left for ``--key=value`` config overrides: a ``--name`` that is
    neither an option nor a config key is unknown, and the message lists both."""
    known = set(keys)
    for arg in extra:
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0]
            if name.replace("-", "_") not in known:
                raise UserError(f"unknown option --{name}; the options are {', '.join(options)}; "
                                f"valid keys for --key=value: {', '.join(sorted(known))}")


def run_command(prog: str, run: Callable[[list[str]], int], argv: list[str]) -> int:
    """``run(argv)``'s exit status; a :class:`UserError` becomes one line on stderr and its code.

    SIGINT and SIGTERM stop the command the same way (``common/signals.py``): one line and
    128 + the signal's number. A write the machine refused that no caller translated (a full
    disk, a read-only mount, inside a framework's own writer) is one line too (``common/writes.py``)."""
    try:
        with signals.handled(signals.stop_now):
            return run(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # argparse: --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt as exc:
        print(f"{prog}: interrupted by {signals.describe(signals.signum_of(exc))}", file=sys.stderr)
        return signals.exit_code(exc)
    except OSError as exc:
        from common.writes import MACHINE_REFUSALS, os_error_message

        if exc.errno not in MACHINE_REFUSALS:
            raise
        print(f"{prog}: error: {os_error_message(exc)}", file=sys.stderr)
        return UserError.exit_code
