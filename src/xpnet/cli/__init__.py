"""The ``xpnet`` command line: one module per command.

- :mod:`.parser`: every command's options (light: ``xpnet --help`` imports no
  command module, no benchmark and no torch);
- :mod:`.main`: parse, dispatch, map errors to exit codes and one-line messages;
- :mod:`.train`, :mod:`.evaluate`, :mod:`.predict`, :mod:`.export`, :mod:`.info`:
  the commands (``bench`` lives in :mod:`xpnet.bench.cli`);
- :mod:`.resume`: the save/resume/overwrite rules of ``xpnet train``;
- :mod:`.common`: errors, JSON output, facts and data loading they share.

A new command is a module here with ``run(args) -> int`` and a sub-parser in
:func:`.parser.build_parser` that names it.
"""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
