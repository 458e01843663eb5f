"""``python -m flowfed`` is the ``flowfed`` command."""

from flowfed.cli.main import main

main()
