"""argparse's help formatter, told the terminal width so that it never imports shutil; nothing else.

argparse builds a formatter for every add_argument() call, and a formatter with no width imports shutil
(which imports bz2, lzma and zlib) to ask the terminal: ~650 KiB of circusd's resident memory for its
whole life, and start-up time for every circusctl call. The width is looked up once, by
shutil.get_terminal_size()'s rules.
"""

from __future__ import annotations

import argparse
import os
import sys


class HelpFormatter(argparse.HelpFormatter):
    """argparse.HelpFormatter with the terminal's width passed in (argparse's own 2-column margin kept)."""

    _columns: int | None = None

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        if width is None:
            width = self.columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    @classmethod
    def columns(cls) -> int:
        """$COLUMNS if positive, else stdout's terminal, else 80 (shutil.get_terminal_size()'s rules)."""
        if cls._columns is None:
            try:
                cols = int(os.environ.get("COLUMNS", "0"))
            except ValueError:
                cols = 0
            if cols <= 0:
                try:
                    cols = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    cols = 0
            cls._columns = cols if cols > 0 else 80
        return cls._columns
