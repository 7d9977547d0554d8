"""``python -m tandem_app.cli`` — same as the ``tandem`` command."""

from tandem_app.cli import main

main()
