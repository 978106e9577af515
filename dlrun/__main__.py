"""``python -m dlrun`` = the ``dlrun`` command."""

from dlrun.cli import main

main()
