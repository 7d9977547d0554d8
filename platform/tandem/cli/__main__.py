"""``python -m tandem.cli`` — same as the ``tandem`` command."""

from tandem.cli import main

main()
