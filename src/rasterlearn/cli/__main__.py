"""``python -m rasterlearn.cli``: the same as the ``rasterlearn`` command."""

from rasterlearn.cli.app import main

main()
