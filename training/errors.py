"""Errors meant for people: one line saying what was wrong, where, and what to do."""
import sys
from typing import Callable


class UserError(Exception):
    """Bad input or environment.  Printed as one line; never a traceback."""


def exit_on_user_error(main: Callable[[], int | None]) -> None:
    """Run a CLI entry point, turning a UserError into one stderr line and exit 2."""
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C during cleanup: leave now, without a traceback
        print("\ninterrupted again: stopped at once; runs not yet ended stay RUNNING in the store", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
