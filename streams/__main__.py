"""``python -m streams`` = the ``firesale`` command."""

from streams.cli import main

main()
