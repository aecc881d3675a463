"""The exception tree of nimctl and the one table that maps it to exit codes.

Every failure a user can meet is a :class:`NimctlError` subclass carrying a one-line
``message`` and an optional ``hint``. The CLI prints ``Error: <message>`` and
``Hint: <hint>`` and exits with the class's ``exit_code``; anything else is an
unexpected error (exit 1). The codes are documented in the README and are the
same for every command.

    NimctlError                       1  unexpected / generic failure
    ├── UsageError                    2  bad arguments or input (file, flag, value)
    │   ├── ConfigError               2  invalid environment variable or setting
    │   └── ManifestError             2  a model manifest that does not parse or validate
    ├── ClientError                      talking to a running server
    │   ├── ServerUnreachableError    3  nothing answers at the URL
    │   ├── ServerNotReadyError       4  live, but the model is not loaded (yet)
    │   ├── WaitTimeoutError          5  a wait or request ran past its deadline
    │   ├── RequestRejectedError      6  the server answered 4xx
    │   └── ServerFailedError         7  the server answered 5xx
    │       └── UnreadableAnswerError 7  an answer that is not JSON or not of the expected shape
    ├── ProfileError                  8  no runnable profile / pinned profile not runnable
    ├── RuntimeFailure                9  container or engine failed (exited while starting, build failed)
    ├── RuntimeUnavailableError      10  Docker daemon (or the chosen runtime) not reachable
    └── ModelStoreError                  the model cache, a pull or a bundle
        ├── ModelUnavailableError    11  repository missing or gated, unknown revision, not cached offline
        ├── DiskFullError            12  not enough disk space for a download or an import
        └── IntegrityError           13  files missing, truncated or corrupt (verify, bundle import)
    ChecksFailedError                14  `nimctl doctor`: at least one item failed (a warning fails none)

Some codes come from no exception, and follow the shell's 128 + signal number: 130 for
Ctrl-C, 129 and 143 for a foreground ``nimctl run`` stopped by SIGHUP or SIGTERM, and 141
when the reader of stdout went away (``nimctl metrics --raw | head``), as for SIGPIPE.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_READY = 4
EXIT_TIMEOUT = 5
EXIT_REJECTED = 6
EXIT_SERVER_ERROR = 7
EXIT_NO_PROFILE = 8
EXIT_RUNTIME_FAILED = 9
EXIT_RUNTIME_UNAVAILABLE = 10
EXIT_MODEL_UNAVAILABLE = 11
EXIT_DISK_FULL = 12
EXIT_INTEGRITY = 13
EXIT_CHECKS_FAILED = 14
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143

# code -> meaning: the README's table, written by hand; tests/cli/test_exit_codes.py checks they agree.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_UNEXPECTED: "unexpected error (a bug: run again with --debug and report it)",
    EXIT_USAGE: "usage error: bad argument, input file, environment variable or manifest",
    EXIT_UNREACHABLE: "server unreachable (connection refused, DNS, wrong URL)",
    EXIT_NOT_READY: "server is live but not ready (model still loading or engine down)",
    EXIT_TIMEOUT: "timed out waiting for the server or a request",
    EXIT_REJECTED: "request rejected by the server (HTTP 4xx)",
    EXIT_SERVER_ERROR: "server error (HTTP 5xx, or an answer nimctl cannot read, or a `chat` reply that "
    "breaks its --json-schema, --json, --regex or --choice)",
    EXIT_NO_PROFILE: "no runnable profile for this machine, or the pinned one cannot run",
    EXIT_RUNTIME_FAILED: "container or engine failed (exited while starting, image build failed)",
    EXIT_RUNTIME_UNAVAILABLE: "container runtime unavailable (Docker daemon not reachable)",
    EXIT_MODEL_UNAVAILABLE: "model unavailable: repository missing or gated, unknown revision, "
    "or not in the cache while offline",
    EXIT_DISK_FULL: "not enough disk space for a download or an import",
    EXIT_INTEGRITY: "files missing, truncated or corrupt (cache verify, bundle import)",
    EXIT_CHECKS_FAILED: "`nimctl doctor` found an item that fails (each says what to do; "
    "a warning fails none)",
    EXIT_HANGUP: "a foreground `nimctl run` stopped by SIGHUP (its terminal closed); the instance is stopped",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a foreground `nimctl run` stops its instance first",
    EXIT_BROKEN_PIPE: "the reader of the output went away (a closed pipe, as with SIGPIPE)",
    EXIT_TERMINATED: "a foreground `nimctl run` stopped by SIGTERM; the instance is stopped",
}


class NimctlError(Exception):
    """Base of every error nimctl reports to a user."""

    exit_code: int = EXIT_UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(NimctlError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """An environment variable or setting has an invalid value."""


class ManifestError(UsageError):
    """A model manifest is broken; the message names the file, the place and the problem."""


class ClientError(NimctlError):
    """Base of the errors met while talking to a server."""


class ServerUnreachableError(ClientError):
    exit_code = EXIT_UNREACHABLE


class ServerNotReadyError(ClientError):
    """``server_message`` keeps the server's own words (its loading state), when it said any."""

    exit_code = EXIT_NOT_READY

    def __init__(self, message: str, *, server_message: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.server_message = server_message


class WaitTimeoutError(ClientError):
    """A wait (for readiness) or a request ran past its deadline; not the builtin TimeoutError."""

    exit_code = EXIT_TIMEOUT


class HTTPStatusError(ClientError):
    """The server answered with an error status; ``status`` and ``body`` keep what it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        body: object = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.error_type = error_type
        self.body = body


class RequestRejectedError(HTTPStatusError):
    exit_code = EXIT_REJECTED


class ServerFailedError(HTTPStatusError):
    exit_code = EXIT_SERVER_ERROR


class UnreadableAnswerError(ServerFailedError):
    """The server answered, but nothing nimctl can read: not JSON, or not the expected shape."""

    def __init__(self, message: str, *, status: int = 200, hint: str | None = None) -> None:
        super().__init__(message, status=status, hint=hint)


class ProfileError(NimctlError):
    exit_code = EXIT_NO_PROFILE


class RuntimeFailure(NimctlError):  # noqa: N818 - reads as "a failure of the runtime"
    exit_code = EXIT_RUNTIME_FAILED


class RuntimeUnavailableError(NimctlError):
    exit_code = EXIT_RUNTIME_UNAVAILABLE


class ChecksFailedError(NimctlError):
    """``nimctl doctor`` printed its report and at least one item failed."""

    exit_code = EXIT_CHECKS_FAILED


class ModelStoreError(NimctlError):
    """Base of the errors of the model cache: pulls, verification, bundles."""


class ModelUnavailableError(ModelStoreError):
    exit_code = EXIT_MODEL_UNAVAILABLE


class DiskFullError(ModelStoreError):
    exit_code = EXIT_DISK_FULL


class IntegrityError(ModelStoreError):
    exit_code = EXIT_INTEGRITY


def exit_code_for(exc: BaseException) -> int:
    """The exit code for any exception: its class's code, or 1 when it is not ours."""
    if isinstance(exc, NimctlError):
        return exc.exit_code
    return EXIT_UNEXPECTED
