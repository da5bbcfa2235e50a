"""The read side as JSON, behind each profile's archive key exactly as the archive pages are: no key, or another
profile's, is the same 404 as any other, and nothing is read. Under /a/PROFILE/KEY/api/: the archive (`digests`), a
digest (`digests/DAY`), a paper (`paper?id=`) and a search (`search?q=`), each about that profile alone; every list
bounded (`limit`, at most 100) and paged (`offset`, and the answer's `next_offset`).

Parameters are checked before anything is read, and a bad one is a 400 that says which and why, in JSON; the
answers are the read side's models, the same that `digest mcp` returns. The app adds its security headers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digest.agents.answers import Answer
from digest.agents.read import MAX_LISTED, MAX_QUERY_CHARACTERS, Reader
from digest.errors import DigestError, NotFoundError


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=MAX_LISTED)] = 20
    offset: Annotated[int, Field(ge=0)] = 0


class PaperAsked(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=300)]


class SearchAsked(Page):
    q: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARACTERS)]
    since: dt.date | None = None
    min_score: Annotated[int | None, Field(ge=0, le=10)] = None


Answering = Callable[[str, Request], Answer]


def api_routes(reader: Reader, profile_of: Callable[[Request], str]) -> list[Route]:
    """`profile_of`: the profile whose key the request carries; a 404 for any other request."""

    def endpoint(answer: Answering) -> Callable[[Request], Awaitable[Response]]:
        async def respond(request: Request) -> Response:
            profile = profile_of(request)
            try:
                # In a worker thread: a search may take a good part of 100 ms, and the scheduler shares the loop.
                found = await run_in_threadpool(answer, profile, request)
            except ValidationError as error:
                return _refused(400, "; ".join(_problem(e) for e in error.errors()))
            except NotFoundError as error:
                return _refused(404, error.message, error.hint)
            except DigestError as error:
                return _refused(400, error.message, error.hint)
            return Response(found.model_dump_json(), media_type="application/json")

        return respond

    def archive(profile: str, request: Request) -> Answer:
        page = Page.model_validate(dict(request.query_params))
        return reader.archive(profile, page.limit, page.offset)

    def digest(profile: str, request: Request) -> Answer:
        page = Page.model_validate(dict(request.query_params))
        try:
            day = dt.date.fromisoformat(str(request.path_params["day"]))
        except ValueError:
            raise NotFoundError("no digest has that date", hint="a date like 2026-06-30") from None
        return reader.digest(profile, day, page.limit, page.offset)

    def paper(profile: str, request: Request) -> Answer:
        return reader.paper(PaperAsked.model_validate(dict(request.query_params)).id, profile)

    def search(profile: str, request: Request) -> Answer:
        asked = SearchAsked.model_validate(dict(request.query_params))
        return reader.search(
            asked.q,
            profile_name=profile,
            since=asked.since,
            min_score=asked.min_score,
            limit=asked.limit,
            offset=asked.offset,
        )

    return [
        Route("/a/{profile}/{key}/api/digests", endpoint(archive), methods=["GET"]),
        Route("/a/{profile}/{key}/api/digests/{day}", endpoint(digest), methods=["GET"]),
        Route("/a/{profile}/{key}/api/paper", endpoint(paper), methods=["GET"]),
        Route("/a/{profile}/{key}/api/search", endpoint(search), methods=["GET"]),
    ]


def _problem(error: ErrorDetails) -> str:
    """A parameter's problem, without its value: a 10 kB query is not echoed back."""
    where = ".".join(str(part) for part in error["loc"]) or "the parameters"
    return f"{where}: {error['msg']}"


def _refused(status: int, error: str, fix: str | None = None) -> Response:
    return JSONResponse({"error": error, "fix": fix}, status_code=status)
