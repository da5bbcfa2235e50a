"""The web app: rating pages and "Save to Zotero" behind signed links, each profile's archive and Atom feed (and the
same read side as JSON, api.py), a health page.

Mail scanners and link previewers fetch every link in an email, so a GET never changes anything: a rating link
shows the paper and one button that POSTs. A POST's token is its capability; a POST from another origin is refused.
Every page is a Jinja template from templates/web/, autoescaped: titles, abstracts and the LLM's words are text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.agents.read import Reader
from digest.config import Config
from digest.errors import LibraryError
from digest.heartbeat import healthy
from digest.links import Links, RateToken, SaveToken, saving_profiles, web_secret
from digest.models import RATING_WORDS, anchor
from digest.render import subject, template_environment
from digest.secrets import redact
from digest.state.store import Store
from digest.taste.ratings import PaperRef, resolve
from digest.taste.zotero_save import save_collection, save_to_zotero
from digest.web.api import api_routes

FEED_DIGESTS = 10  # the feed carries the papers of this many recent digests
# The rating form is one short urlencoded field: anything else is refused before a byte of it is read.
FORM_BYTES = 1024
FORM_FIELDS = 4
FORM_SECONDS = 5.0
# No script at all: the buttons are plain forms. Inline styles only, as in the email.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # The archive's address is a capability: never sent to arXiv; "no-referrer" would make forms' Origin "null".
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class RateForm(BaseModel):
    """The rating form's one field: the archive page to return to, when the rating was given there."""

    model_config = ConfigDict(extra="forbid")

    back: dt.date | None = None


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


async def small_form(request: Request) -> dict[str, str]:
    """The body of a rating form: urlencoded, at most FORM_BYTES, in by FORM_SECONDS. Starlette's own form
    parser would take multipart files of any size and number, spooling them to memory and disk."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise HTTPException(415)
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isdigit() and int(declared) <= FORM_BYTES):
        raise HTTPException(413)
    body = bytearray()
    try:
        async with asyncio.timeout(FORM_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > FORM_BYTES:
                    raise HTTPException(413)
    except TimeoutError:
        raise HTTPException(408) from None
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=FORM_FIELDS))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400) from None


def create_app(config: Config, *, heartbeat: Path | None = None) -> ASGIApp:
    """`heartbeat`: the scheduler's heartbeat file when `digest serve` runs beside; /health reports on it, and
    exists only then."""
    with Store(config.state) as store:
        secret = web_secret(config, store)
    base_url = config.web.base_url if config.web is not None else None
    prefix = urlsplit(base_url).path if base_url else ""  # behind a proxy at https://host/digest, links start there
    saving = saving_profiles(config)
    never_shown = config.secrets
    links = Links(prefix, secret, saving)
    profiles = {p.name: p for p in config.profiles}
    one_save_at_a_time = asyncio.Lock()  # a double click looks the paper up once, and creates it once
    pages = Jinja2Templates(env=template_environment(config.output))

    def page(
        request: Request, name: str, context: dict[str, Any], status: int = 200, media_type: str = "text/html"
    ) -> Response:
        return pages.TemplateResponse(
            request, f"web/{name}", {"links": links, **context}, status_code=status, media_type=media_type
        )

    def token_of(request: Request) -> RateToken:
        token = links.read(request.path_params["token"])
        if token is None or token.p not in profiles:
            raise HTTPException(404)
        return token

    def save_token_of(request: Request) -> SaveToken:
        token = links.read_save(request.path_params["token"])
        if token is None or token.p not in saving:
            raise HTTPException(404)
        return token

    def profile_of(request: Request) -> str:
        profile = str(request.path_params["profile"])
        if profile not in profiles or not links.key_matches(profile, str(request.path_params["key"])):
            raise HTTPException(404)
        return profile

    def same_origin(request: Request) -> bool:
        """A POST must come from a page of ours. Browsers say where from in Sec-Fetch-Site and in Origin (which is
        "null" from some private contexts; then Sec-Fetch-Site decides). A client that sends neither is no browser
        tricked by another site: the signed token alone is its capability."""
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None or fetch_site is not None
        if base_url:
            ours = urlsplit(base_url)
            return origin == f"{ours.scheme}://{ours.netloc}"
        return urlsplit(origin).netloc == request.headers.get("host")

    async def posted_form(request: Request) -> RateForm:
        """A POST's form: from this site's own pages only, and small."""
        if not same_origin(request):
            raise HTTPException(403)
        try:
            return RateForm.model_validate(await small_form(request))
        except ValidationError:
            raise HTTPException(400) from None

    async def rate_page(request: Request) -> Response:
        token = token_of(request)
        with Store(config.state) as store:
            paper = store.latest_papers([token.a]).get(token.a)
            current = store.rating_of(token.p, token.a)
        return page(request, "rate.html.j2", {"token": token, "paper": paper, "current": current, **_words()})

    async def rate(request: Request) -> Response:
        token = token_of(request)
        form = await posted_form(request)
        with Store(config.state) as store:
            before = store.rating_of(token.p, token.a)
            if token.r == 0:
                paper = store.latest_papers([token.a]).get(token.a)
                store.clear_rating(token.p, token.a)
            else:
                # From the state, or (a digest older than retention_days) from arXiv's export API.
                ref = PaperRef(token.a, token.v)
                paper = (await resolve(config, store, [ref])).get(ref)
                if paper is None:
                    raise HTTPException(404)
                store.rate(token.p, paper, token.r, "web")
        if form.back is not None:
            back = f"{prefix}/a/{token.p}/{links.key(token.p)}/{form.back}#{anchor(token.a)}"
            return RedirectResponse(back, status_code=303)
        undo = RateToken(p=token.p, a=token.a, v=token.v, r=before)
        return page(
            request,
            "rated.html.j2",
            {"token": token, "undo": undo, "paper": paper, "before": before, **_words()},
        )

    async def save_page(request: Request) -> Response:
        token = save_token_of(request)
        with Store(config.state) as store:
            paper = store.latest_papers([token.a]).get(token.a)
        return page(request, "save.html.j2", {"token": token, "paper": paper, "zotero": _zotero(token)})

    async def save(request: Request) -> Response:
        """Save the paper to the reader's Zotero library: looked up first, created once (see zotero_save)."""
        token = save_token_of(request)
        form = await posted_form(request)
        with Store(config.state) as store:
            ref = PaperRef(token.a, token.v)
            paper = (await resolve(config, store, [ref])).get(ref)
            if paper is None:
                raise HTTPException(404)
            shown: dict[str, Any] = {"token": token, "paper": paper, "zotero": _zotero(token), "failed": None}
            try:
                async with one_save_at_a_time:
                    saved = await save_to_zotero(store, profiles[token.p], paper)
            except LibraryError as error:
                # What Zotero said may echo what it was sent: shown without the secrets.
                return page(request, "saved.html.j2", shown | {"failed": redact(str(error), never_shown)}, status=502)
        if form.back is not None:
            back = f"{prefix}/a/{token.p}/{links.key(token.p)}/{form.back}#{anchor(token.a)}"
            return RedirectResponse(back, status_code=303)
        return page(request, "saved.html.j2", shown | {"saved": saved})

    def _zotero(token: SaveToken) -> str | None:
        """The collection the profile saves to, as the pages name it."""
        zotero = save_collection(profiles[token.p])
        return zotero.save_to if zotero is not None else None

    async def archive(request: Request) -> Response:
        profile = profile_of(request)
        with Store(config.state) as store:
            days = store.digest_dates(profile)
        return page(request, "archive.html.j2", {"profile": profile, "days": days})

    async def archive_day(request: Request) -> Response:
        profile = profile_of(request)
        try:
            day = dt.date.fromisoformat(str(request.path_params["day"]))
        except ValueError:
            raise HTTPException(404) from None
        with Store(config.state) as store:
            found = store.digest_content(profile, day)
            if found is None:
                raise HTTPException(404)
            digest = found.content
            rated = {e.paper.id: store.rating_of(profile, e.paper.id) for e in digest.entries}
        # A web page has no size limit of a mail client: every paper in full.
        every = {entry.paper.key for entry in digest.entries}
        context = {"digest": digest, "subject": subject(digest), "rated": rated, "full": every, "shown": every}
        return page(request, "digest.html.j2", context | _words())

    async def feed(request: Request) -> Response:
        profile = profile_of(request)
        with Store(config.state) as store:
            recorded = [store.digest_content(profile, day) for day in store.digest_dates(profile)[:FEED_DIGESTS]]
        digests = [found for found in recorded if found is not None]
        # Without base_url, the links are paths and the ids are made from them: nothing is built from the
        # request's Host header, which any client may set (and a cache may keep).
        archive_url = f"{base_url}{links.archive(profile)[len(prefix) :]}" if base_url else links.archive(profile)
        entries = [
            (entry, when, f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, archive_url + entry.paper.key)}")
            for digest, when in digests
            for entry in digest.entries
        ]
        context = {
            "profile": profile,
            "feed_id": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, archive_url)}",
            "self_url": archive_url + "feed.atom",
            "archive_url": archive_url,
            "updated": max((when for _, when in digests), default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
            "entries": entries,
        }
        return page(request, "feed.atom.j2", context, media_type="application/atom+xml")

    async def health(request: Request) -> Response:
        if heartbeat is None or not healthy(heartbeat, time.time()):
            return PlainTextResponse("unhealthy: no heartbeat from the scheduler\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def refused(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        # The same few words for every refusal: a 404 says nothing about what does or does not exist.
        return page(request, "error.html.j2", {"status": status}, status=status)

    app = Starlette(
        routes=[
            Route("/r/{token}", rate_page, methods=["GET"]),
            Route("/r/{token}", rate, methods=["POST"]),
            Route("/z/{token}", save_page, methods=["GET"]),
            Route("/z/{token}", save, methods=["POST"]),
            Route("/a/{profile}/{key}/", archive, methods=["GET"]),
            Route("/a/{profile}/{key}/feed.atom", feed, methods=["GET"]),
            *api_routes(Reader(config), profile_of),
            Route("/a/{profile}/{key}/{day}", archive_day, methods=["GET"]),
            # The scheduler's health: under `digest web` alone there is none to report on, so no such page.
            *([Route("/health", health, methods=["GET"])] if heartbeat is not None else []),
        ],
        exception_handlers={HTTPException: refused},
    )
    # Outside Starlette's own error handling, so that a 500 carries the headers too.
    return SecurityHeaders(app)


def _words() -> dict[str, Any]:
    return {"words": {**RATING_WORDS, 0: "no rating"}}
