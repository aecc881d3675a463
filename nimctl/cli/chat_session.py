"""The interactive ``nimctl chat`` session.

prompt_toolkit (pure Python, from PyPI) rather than the ``readline`` module: it gives the
same arrow-key history and line editing on every platform (``readline`` is missing on
Windows and is libedit on macOS), real multi-line input (Alt+Enter, and pasted text stays
one message), and a clean Ctrl-C / Ctrl-D split. It is imported only here, so the other
commands do not pay its ~0.1 s import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.cli._reply import print_streamed_reply
from nimctl.errors import ClientError, UsageError

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from nimctl.client.conversation import Conversation
    from nimctl.output import Output

HELP = """\
Commands:
  /image PATH|URL   attach an image to your next message
  /system [TEXT]    set the system prompt (no text: remove it)
  /clear            forget the conversation so far (the system prompt stays)
  /stats            show or hide the figures after each reply
  /exit             leave (Ctrl-D too)
Alt+Enter starts a new line; Ctrl-C stops a reply, or clears the line you are typing."""


def history_file() -> Path:
    """In nimctl's state folder, so ``NIMCTL_STATE_DIR`` moves it with the rest."""
    from nimctl.runtime.paths import state_dir  # os and pathlib only: cheap at start-up

    return state_dir() / "chat_history"


def _prompt_session() -> PromptSession[str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: object) -> None:
        event.current_buffer.insert_text("\n")  # type: ignore[attr-defined]

    history: History
    try:
        path = history_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(path))
    except OSError:
        history = InMemoryHistory()  # a read-only home must not stop the chat
    return PromptSession(history=history, key_bindings=bindings, prompt_continuation="... ")


def run_session(out: Output, talk: Conversation, *, stream: bool, show_stats: bool) -> None:
    """Read questions until /exit or Ctrl-D; a failed request is reported and the session goes on."""
    session = _prompt_session()
    out.info(f"Chatting with {talk.model} at {talk.client.base_url}. /help for commands, Ctrl-D to leave.")
    settings = {"stats": show_stats}
    while True:
        try:
            line = session.prompt(">>> ")
        except KeyboardInterrupt:
            continue  # like a shell: Ctrl-C drops the line being typed
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not _slash_command(out, talk, text, settings):
                break
            continue
        _reply(out, talk, text, stream=stream, show_stats=settings["stats"])


def _reply(out: Output, talk: Conversation, text: str, *, stream: bool, show_stats: bool) -> None:
    try:
        if stream:
            print_streamed_reply(out, talk, text)
        else:
            out.text(talk.ask(text).text)
    except KeyboardInterrupt:
        out.info("[reply cancelled]")
        return
    except ClientError as exc:
        out.error(exc.message, exc.hint)
        return
    if show_stats and talk.last_stats is not None:
        out.info(talk.last_stats.summary())
    try:
        talk.check_last_reply()  # a reply that breaks the constraint is said so; the session goes on
    except ClientError as exc:
        out.error(exc.message, exc.hint)


def _slash_command(out: Output, talk: Conversation, text: str, settings: dict[str, bool]) -> bool:
    """Carry out one /command; False means leave the session."""
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/help":
        out.info(HELP)
    elif name == "/image":
        if not argument:
            out.error("/image needs a path or URL", "/image ./photo.png")
            return True
        try:
            talk.attach_image(argument)
        except UsageError as exc:
            out.error(exc.message, exc.hint)
        else:
            out.info(f"image attached ({len(talk.pending_images)} waiting for your next message)")
    elif name == "/system":
        talk.set_system(argument or None)
        out.info(f"system prompt set: {argument}" if argument else "system prompt removed")
    elif name == "/clear":
        talk.clear()
        out.info("conversation cleared")
    elif name == "/stats":
        settings["stats"] = not settings["stats"]
        out.info(f"stats {'on' if settings['stats'] else 'off'}")
        if talk.last_stats is not None:
            out.info(f"last reply: {talk.last_stats.summary()}")
    else:
        out.error(f"unknown command {name}", "/help lists the commands")
    return True
