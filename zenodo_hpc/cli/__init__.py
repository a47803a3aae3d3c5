"""The ``zenodo-hpc`` command line (the console script ``zenodo_hpc.cli:main``): ``main.py`` holds the table of
commands and runs one, ``options.py`` the options several commands share, and one module per command or group
of commands declares its options and its handler (``run.py``: submit, resume, run)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
