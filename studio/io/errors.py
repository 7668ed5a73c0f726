"""The one exception type that means "the user's input is wrong", and how commands report it."""

from __future__ import annotations

import sys
from typing import NoReturn

INPUT_ERROR_STATUS = 2
"""Exit status of a command stopped by bad input (as argparse's usage errors)."""


class StudioInputError(ValueError):
    """Raised with a one-sentence message naming the bad input (file, field, value)."""


def exit_with_input_error(err: BaseException) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``INPUT_ERROR_STATUS``."""
    message = " ".join(str(err).split())
    red = "\033[1;31m" if sys.stderr.isatty() else ""
    reset = "\033[0m" if red else ""
    print(f"{red}error:{reset} {message}", file=sys.stderr, flush=True)
    raise SystemExit(INPUT_ERROR_STATUS)
