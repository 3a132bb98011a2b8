"""What every command of the tool shares: flags errors as one line and exit status 2.

absl's own parser prints "FATAL Flags parsing error" over two lines and exits 1, and
exits 1 after ``--help``; every command here runs through ``run_command`` instead, so
that a user's mistake is always one ``error:`` line and status 2, and help is status 0.
"""
import sys
from typing import NoReturn

from absl import app, flags

HELP_FLAGS = ("--help", "-help", "-h", "--helpfull", "--helpshort", "-?")


def print_error(message) -> None:
    """Prints a user's mistake as one ``error:`` line on stderr.

    A message of several lines (the settings that clash, how to prepare missing data)
    keeps its first line there; the others follow indented, so that ``grep ^error:``
    finds one line per mistake.
    """
    first, *details = str(message).strip().splitlines() or [""]
    print(f"error: {first}", *("  " + line.lstrip() for line in details if line.strip()),
          sep="\n", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """Ends the command for a user's mistake: ``print_error``, then exit status 2."""
    print_error(message)
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


def run_command(main, home=None) -> None:
    """absl's app.run with the flag handling above.

    ``home``: the module that holds the command, when ``python -m`` starts it through a
    short forwarding module (``tfgan_exp/score.py`` for ``evaluation/score.py``): --help
    then shows that module's docstring and flags, as if it had been started itself.
    """
    if home is not None:
        main_module = sys.modules["__main__"]
        main_module.__doc__ = home.__doc__
        # absl files a command's own flags under sys.argv[0] (the started file's path).
        for flag in flags.FLAGS.get_key_flags_for_module(home.__name__):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, flags_parser=_parse_flags)
