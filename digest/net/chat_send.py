"""One chat message sent through Apprise in a process of its own: `python -m digest.net.chat_send` reads a
SendRequest on stdin and writes on stdout what happens, a SendEvent a line, as it happens.

Why a process: a send in a thread cannot be ended. Apprise's own timeout abandons the thread, the interpreter waits
for it at exit, and a service that trickles its answer a byte at a time holds it for ever. A process is killed at
its deadline, whatever the service does. It says before each request that a request is going out, so that its
parent knows, when it has to kill it, whether the service may have the message.

What a service answers stays here, reduced to what names the outcome: the status, whether the answer says it
refused (Slack's and Telegram's `{"ok": false}` come with a 200), a few words of the service's own for why, and
Retry-After. Nothing else of it (an error page that echoes the request's Authorization header) leaves the process.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import requests

WORDS_KEPT = 100  # of the service's own words for a refusal: enough to name it ("Bad Request: chat not found")
# Where services put their refusal in a JSON answer, and the HTTP status it means when they say one: Telegram's
# error_code and description, ntfy's http and error, Mattermost's status_code and message, Gotify's errorCode and
# errorDescription, Slack's error, Lark's msg, Matrix's errcode.
WORDS = ("description", "error", "message", "msg", "errorDescription", "errcode")
MEANT_STATUS = ("error_code", "http", "status_code", "errorCode")


class SendRequest(BaseModel):
    url: str
    title: str
    body: str
    deadline_seconds: float  # the process ends itself past it, should its parent be gone


class SendEvent(BaseModel):
    """`request`: a request is going out (the service may have the message from now on); `answer`: the service
    answered it; `no answer`: it failed without one (no connection, no answer in time); `done`: Apprise is done,
    `accepted` if it counted the message as sent."""

    kind: Literal["request", "answer", "no answer", "done"]
    status: int = 0  # the answer's HTTP status
    meant: int | None = None  # the HTTP status the answer's body names, where a service says one (ntfy, Telegram)
    refused: bool = False  # the answer's body says the service refused, whatever the status
    words: str = ""  # the service's own few words for the refusal, or what failed without an answer
    retry_after: float | None = None  # seconds, as the answer's Retry-After asks
    accepted: bool = False


_telling = threading.Lock()


def _tell(event: SendEvent) -> None:
    with _telling:
        sys.stdout.write(event.model_dump_json() + "\n")
        sys.stdout.flush()


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(content)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _says_refused(said: dict[str, Any]) -> bool:
    """An answer that refuses in its body: `"ok": false` (Slack, Telegram), an error object (ntfy, Mattermost,
    Gotify, Matrix), or Lark's and Feishu's non-zero `code` beside a `msg`."""
    if said.get("ok") is False or said.get("error") or said.get("errcode"):
        return True
    if isinstance(said.get("status_code"), int) and said["status_code"] >= 400:
        return True
    return bool(said.get("code")) and "msg" in said


def _words(said: dict[str, Any]) -> str:
    found = next((said[key] for key in WORDS if isinstance(said.get(key), str) and said[key]), "")
    line = " ".join(found.split())
    return line if len(line) <= WORDS_KEPT else line[: WORDS_KEPT - 4] + " ..."


def _meant(said: dict[str, Any]) -> int | None:
    return next((said[key] for key in MEANT_STATUS if isinstance(said.get(key), int) and 100 <= said[key] < 600), None)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, or as an HTTP date (RFC 9110)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _answer(response: requests.Response) -> SendEvent:
    said = _json_object(response.content)
    return SendEvent(
        kind="answer",
        status=response.status_code,
        meant=_meant(said) if said is not None else None,
        refused=said is not None and _says_refused(said),
        words=_words(said) if said is not None else "",
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _failure(error: Exception) -> str:
    """What failed, in words of our own: a requests error's text names the URL, and with it a token."""
    import requests

    if isinstance(error, requests.exceptions.SSLError):
        return "TLS with the service failed"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "could not connect in time"
    if isinstance(error, requests.exceptions.Timeout):
        return "the service did not answer in time"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "could not connect"
    return f"the request failed ({error.__class__.__name__})"


def _observe_every_request() -> None:
    """Every request Apprise's plugins make goes through requests' HTTPAdapter.send: each is told before it goes
    out, and its answer (or its failure) after. This process sends one message and nothing else."""
    from requests.adapters import HTTPAdapter

    send = HTTPAdapter.send

    def observed(adapter: HTTPAdapter, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        _tell(SendEvent(kind="request"))
        try:
            response = send(adapter, request, *args, **kwargs)
        except Exception as error:
            _tell(SendEvent(kind="no answer", words=_failure(error)))
            raise
        _tell(_answer(response))
        return response

    HTTPAdapter.send = observed  # type: ignore[method-assign,assignment]


def main() -> None:
    request = SendRequest.model_validate_json(sys.stdin.buffer.read())
    # SIGALRM's default action ends the process: a deadline of its own, should its parent be gone.
    signal.alarm(math.ceil(request.deadline_seconds) + 1)
    # Apprise's log lines carry what services answered (its debug lines, whole answers): none is needed here.
    logging.disable(logging.CRITICAL)
    import apprise

    _observe_every_request()
    notifier = apprise.Apprise()
    notifier.add(request.url)
    result = notifier.notify(body=request.body, title=request.title, body_format=apprise.NotifyFormat.MARKDOWN)
    _tell(SendEvent(kind="done", accepted=bool(result)))


if __name__ == "__main__":
    main()
