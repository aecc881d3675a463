"""Printing a streamed chat reply, for the one-shot ``nimctl chat`` and its interactive session.

Its own module so that :mod:`nimctl.cli.chat` (which starts the session) and
:mod:`nimctl.cli.chat_session` both import it, and neither imports the other back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nimctl.client.conversation import Conversation
    from nimctl.output import Output


def print_streamed_reply(out: Output, talk: Conversation, question: str) -> None:
    """Print the reply piece by piece; the request is closed however this ends (Ctrl-C included)."""
    pieces = talk.stream(question)
    printed = False
    try:
        for piece in pieces:
            out.write(piece)
            printed = True
    except BaseException:
        if printed:
            out.write("\n")  # end the half line, so the error or the next prompt starts clean
        raise
    finally:
        pieces.close()
    out.write("\n")
