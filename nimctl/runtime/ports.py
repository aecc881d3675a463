"""Is a host port free, and which one to suggest when it is not."""

from __future__ import annotations

import errno
import socket

from nimctl.errors import UsageError


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in {errno.EADDRINUSE, errno.EACCES}:
                return False
            raise UsageError(f"cannot use --host {host}: {exc.strerror}") from None
    return True


def suggest_port(host: str, port: int, tries: int = 100) -> int | None:
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if port_free(host, candidate):
            return candidate
    return None


def port_in_use_error(host: str, port: int) -> UsageError:
    free = suggest_port(host, port)
    hint = f"pass --port {free}" if free else "pass another --port"
    return UsageError(f"port {port} on {host} is already in use", hint=hint)


def check_port_free(host: str, port: int) -> None:
    if not port_free(host, port):
        raise port_in_use_error(host, port)
