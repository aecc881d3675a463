"""``python -m nimctl.server``: ``nim-serve`` without its console script (as the local runtime starts it)."""

from nimctl.server.command import main

main()
