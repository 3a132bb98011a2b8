"""What every command of the tool shares: flags errors as one line and exit status 2.

absl's own parser prints "FATAL Flags parsing error" over two lines and exits 1, and
exits 1 after ``--help``; every command here runs through ``run_command`` instead, so
that a user's mistake is always one ``error:`` line and status 2, and help is status 0.
"""
import sys
from typing import NoReturn

from absl import app, flags

HELP_FLAGS = ("--help", "-help", "-h", "--helpfull", "--helpshort", "-?")


def fail(message: str) -> NoReturn:
    """Ends the command for a user's mistake: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(f"{error} (see --help)")
    except SystemExit as exit_:  # absl exits 1 once it has printed the help
        if exit_.code == 1 and any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise


def run_command(main) -> None:
    """absl's app.run with the flag handling above."""
    app.run(main, flags_parser=_parse_flags)
