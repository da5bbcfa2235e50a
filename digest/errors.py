"""Every error a user can meet, in one place.

Each carries a message written for the person running `digest`: what went wrong, where, and what to do about
it. The CLI prints it (never a traceback) and exits with the error's exit code.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DigestError(Exception):
    """An error the user can act on; `hint` says how."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  fix: {self.hint}"


class ConfigError(DigestError):
    """config.yaml cannot be read or does not validate; `problems` lists every one found."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in the configuration:"]
        lines += [f"  - {problem}" for problem in problems]
        super().__init__("\n".join(lines))


class FetchError(DigestError):
    """arXiv could not be reached, or answered with something that is not a feed."""


class LLMError(DigestError):
    """The LLM server refused the whole run (bad key, no quota, unknown model, unreachable)."""


class DeliveryError(DigestError):
    """A digest could not be delivered; it stays pending and is retried on the next run."""


class LibraryError(DigestError):
    """The reader's Zotero library could not be read or written: a refused key, the local API switched off, a
    server that does not answer as Zotero does. It costs the library step, never the digest."""


class StateError(DigestError):
    """The state file cannot be used: the disk is full, the file is damaged or read-only, or it is too new."""


class UsageError(DigestError):
    """A command was given something it cannot use: an unknown paper id or profile, a word it does not know."""

    exit_code = EXIT_USAGE


class NotFoundError(UsageError):
    """What was asked for is not in the state: a digest of that day, a paper digest has not seen."""


def cause_of(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in `error`'s chain of causes, if any: what a library wrapped."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
