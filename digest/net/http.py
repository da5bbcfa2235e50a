"""HTTP with a ceiling: a response body larger than the caller allows is an error, not a memory leak.

Servers are untrusted (a broken proxy, a hostile mirror): an endless or enormous body is cut off at `limit` bytes as
it streams in, so memory stays bounded whatever is sent. Deadlines for whole responses are the callers' (asyncio
timeouts), since the clients' timeouts bound each read, not the response. The arXiv side speaks httpx; the openai
client speaks httpx2, its fork with the same API: one transport for each, around the same counting.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterable, AsyncIterator

import httpx
import httpx2

RESOLVE_SECONDS = 3.0  # a name server answers in milliseconds; one silent this long is not answering at all


class TooLarge(httpx.ReadError):
    """The body passed the limit; a transport error, so the caller's retries and messages apply."""


class TooLargeAnswer(httpx2.ReadError):
    """The same, for the LLM server's answers."""


async def _counted(chunks: AsyncIterable[bytes], limit: int, error: type[Exception]) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise error(f"the response is larger than {limit:,} bytes")
        yield chunk


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, limit: int) -> None:
        self._stream, self._limit = stream, limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _counted(self._stream, self._limit, TooLarge)

    async def aclose(self) -> None:
        await self._stream.aclose()


class CappedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._limit)
        return response


class _CappedAnswerStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, limit: int) -> None:
        self._stream, self._limit = stream, limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _counted(self._stream, self._limit, TooLargeAnswer)

    async def aclose(self) -> None:
        await self._stream.aclose()


class CappedAnswerTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedAnswerStream(response.stream, self._limit)
        return response


def capped_client(limit: int, *, timeout: float, follow_redirects: bool = False) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=CappedTransport(limit), timeout=timeout, follow_redirects=follow_redirects)


def capped_answer_client(limit: int, *, timeout: float) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=CappedAnswerTransport(limit), timeout=timeout)


async def resolver_silent(host: str) -> bool:
    """Whether looking `host` up gets no answer at all within RESOLVE_SECONDS: a black-holed name server, behind a
    connection that "timed out" with no word of DNS. Asked only after a timeout, to say which it was."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return False  # an address needs no name server
    except ValueError:
        pass
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await asyncio.get_running_loop().getaddrinfo(host, None)
    except TimeoutError:
        return True
    except OSError:
        return False  # an answer, if a refusal: reported as such where the connection fails
    return False
