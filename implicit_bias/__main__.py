"""``python -m implicit_bias`` is the ``implicit-bias`` command."""

from .app import main

main()
