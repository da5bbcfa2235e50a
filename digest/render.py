"""A Digest as people read it: HTML, Markdown and plain text through Jinja, and a chat message; presentation only."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import css_inline
import jinja2

from digest.config import OutputConfig
from digest.models import Digest, Entry, Paper, Rendered, Verdict, best_first
from digest.wording import opening, paper_count

if TYPE_CHECKING:  # the web side imports the store; rendering needs only the type
    from digest.links import Links

AUTHORS_SHOWN = 5
# Gmail cuts a message's HTML past about 102 kB, and with it the footer and the archive link: a digest stays under.
HTML_BUDGET = 100_000


def package_templates() -> Path:
    """The templates shipped in the wheel, or, in a source checkout, the repository's templates/ folder."""
    installed = Path(__file__).parent / "templates"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "templates"


# Characters that Markdown, or the HTML a Markdown viewer renders, would act on anywhere in a line.
MARKDOWN_ACTIVE = re.compile(r"([\\`*_{}\[\]()#+!|<>~&])")
# What only acts at the start of a line (a list, a heading underline, a numbered list), and bare links.
MARKDOWN_LINE_START = re.compile(r"^(?:([-=])|(\d+)([.)]))")
BARE_LINK = re.compile(r"(?i)(https?|ftp|mailto)(:)|\b(www)(\.)")


def markdown_text(text: object) -> str:
    """Untrusted text as inert Markdown: on one line, every character that could make a link, an image, markup or
    a block escaped, and bare URLs broken so that viewers do not link them. Links are the template's own."""
    line = " ".join(str(text).split())
    line = MARKDOWN_ACTIVE.sub(r"\\\1", line)
    line = BARE_LINK.sub(lambda m: f"{m[1] or m[3]}\\{m[2] or m[4]}", line)
    return MARKDOWN_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", line)


# An @ before a word is a mention in Slack, Discord and Mattermost (@channel, @everyone): a word joiner after it
# keeps the text as it reads and pings nobody.
MENTION = re.compile(r"@(?=\w)")
CHAT_REASON_CHARACTERS = 200


def chat_text(text: object) -> str:
    """Untrusted text for a chat message: inert Markdown, as in the Markdown digest, and no mentions."""
    return MENTION.sub("@\u2060", markdown_text(text))


def chat_message(digest: Digest, links: Links | None, fits: Callable[[str], bool], *, emailed: bool) -> str:
    """The digest as a short Markdown chat message: for each paper, best first, its score, title, a one-line
    reason and its link (and the rating links with the web side); as many papers as `fits` takes, then "and N
    more" and where they are: the archive, with the web side, else the email (`emailed`: the profile has one)."""
    ranked = sorted(digest.entries, key=best_first)
    head = (
        f"{paper_count(digest.relevant_count)} for you of {paper_count(digest.papers_read)} read "
        f"({chat_text(', '.join(digest.categories))}, score {digest.min_score}+)"
    )
    if digest.left_out:
        head += f"; {digest.left_out} more passed your threshold, left out by max_papers"
    if digest.unclassifiable:
        head += f"; {paper_count(len(digest.unclassifiable))} the LLM could not judge are in the full digest"
    blocks = [_chat_entry(digest, entry, links) for entry in ranked]

    def message(shown: int) -> str:
        parts = [head, *blocks[:shown]]
        if shown < len(blocks):
            more = len(blocks) - shown
            where = links.archive(digest.profile) if links is not None else "the email digest has them all"
            parts.append(f"and {more} more: {where}" if links is not None or emailed else f"and {more} more not shown")
        elif links is not None:
            parts.append(f"Past digests: {links.archive(digest.profile)}")
        return "\n\n".join(parts)

    if fits(whole := message(len(blocks))):
        return whole
    return message(_largest(lambda n: fits(message(n)), len(blocks)))


def _chat_entry(digest: Digest, entry: Entry, links: Links | None) -> str:
    paper, verdict = entry.paper, entry.verdict
    reason = opening(" ".join(verdict.reason.split()), CHAT_REASON_CHARACTERS)
    title = f"**{chat_text(badge(verdict))}** {chat_text(origin(digest, paper))}{chat_text(paper.title)}"
    lines = [title, chat_text(reason), paper.abs_url]
    if links is not None:
        up, down = links.rate(digest.profile, paper, 1), links.rate(digest.profile, paper, -1)
        lines[-1] += f" · [more like this]({up}) · [not for me]({down})"
    return "\n".join(lines)


def subject(digest: Digest) -> str:
    return f"{heading(digest, ' - ', '%d %b %Y')} - {paper_count(digest.relevant_count)} for you"


def heading(digest: Digest, separator: str = " · ", day: str = "%a %d %b %Y") -> str:
    """ "arXiv digest · Tue 30 Jun 2026", or for a weekly digest the days it covers: from `since` to the day
    before its own."""
    names = " + ".join(digest.sources)
    if digest.since is None:
        return f"{names} digest{separator}{digest.announced.strftime(day)}"
    last = max(digest.since, digest.announced - dt.timedelta(days=1))
    days = f"{digest.since:%d %b} to {last:%d %b %Y}" if last > digest.since else f"{last:%d %b %Y}"
    return f"{names} weekly digest{separator}{days}"


def origin(digest: Digest, paper: Paper) -> str:
    """ "bioRxiv · " before a paper's category where the digest is not all arXiv's, so the reader sees where each
    paper is from; nothing otherwise."""
    return f"{paper.source} · " if digest.mixed else ""


def badge(verdict: Verdict) -> str:
    """What stands beside a title: the score, or which of the reader's rules put the paper there."""
    return {"author": "followed", "keyword": "keyword"}.get(verdict.rule or "", f"{verdict.score}/10")


def rating_note(digest: Digest, links: Links | None = None) -> str:
    """The footer's word on ratings: how many the reader has given, and how to give one."""
    example = next((e.paper.id for _, entries in digest.groups for e in entries), "2606.29563")
    how = f"digest rate {example} up (more like this) or down (not for me) --profile {digest.profile}"
    if links is not None:
        how = "the links under each paper"
    if not digest.rated:
        return f"Teach this digest what you want by rating papers: {how}"
    return f"You have rated {paper_count(digest.rated)} for this digest; they teach it what you want. Rate more: {how}"


def short_authors(authors: list[str], shown: int = AUTHORS_SHOWN) -> str:
    if len(authors) <= shown:
        return ", ".join(authors)
    return f"{', '.join(authors[:shown])} and {len(authors) - shown} more"


def template_environment(output: OutputConfig) -> jinja2.Environment:
    """Templates from output.templates first, the package's as fallback; HTML and Atom autoescaped throughout."""
    folders = [package_templates()] if output.templates is None else [output.templates, package_templates()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "atom.j2"), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short_authors"] = short_authors
    env.filters["badge"] = badge
    env.filters["md"] = markdown_text
    env.filters["papers"] = paper_count
    env.filters["opening"] = opening
    env.globals["rating_note"] = rating_note
    env.globals["heading"] = heading
    env.globals["origin"] = origin
    return env


class Renderer:
    """`links`: the rating links and the archive link, when the web side has a base_url."""

    def __init__(self, output: OutputConfig, links: Links | None = None) -> None:
        self._format = output.format
        self._links = links
        self._env = template_environment(output)
        # Mail clients ignore most <style> blocks: the CSS goes into style attributes; nothing is fetched.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False)

    def render(self, digest: Digest) -> Rendered:
        context = {"digest": digest, "subject": subject(digest), "links": self._links}
        text = self._env.get_template("digest.txt.j2").render(context)
        if self._format == "markdown":
            markdown = self._env.get_template("digest.md.j2").render(context)
            return Rendered(subject=subject(digest), text=text, html=None, markdown=markdown)
        return Rendered(subject=subject(digest), text=text, html=self.html(digest), markdown=None)

    def html(self, digest: Digest, budget: int = HTML_BUDGET) -> str:
        """The HTML part, in at most `budget` bytes: every paper in full if they fit; else the best in full and the
        next by title alone (with compact rating links, under a web side: every paper shown can be rated), each in
        its group; and only if even the titles do not fit, the rest counted, with a link to them."""
        ranked = [e.paper.key for e in sorted(digest.entries, key=best_first)]

        def render(full: int, shown: int) -> str:
            context = {
                "digest": digest,
                "subject": subject(digest),
                "links": self._links,
                "full": set(ranked[:full]),
                "shown": set(ranked[:shown]),
            }
            return self._inliner.inline(self._env.get_template("digest.html.j2").render(context))

        def fits(html: str) -> bool:
            return len(html.encode()) <= budget

        whole = render(len(ranked), len(ranked))
        if fits(whole):
            return whole
        # The largest count that fits, by bisection: each rendering of a long digest takes milliseconds.
        full = _largest(lambda n: fits(render(n, len(ranked))), len(ranked))
        if full > 0:
            return render(full, len(ranked))
        return render(0, _largest(lambda n: fits(render(0, n)), len(ranked)))


def _largest(holds: Callable[[int], bool], top: int) -> int:
    """The largest n in 0..top-1 for which `holds(n)` (assumed true for smaller n), or 0."""
    low, high = 0, top - 1
    while low < high:
        middle = (low + high + 1) // 2
        if holds(middle):
            low = middle
        else:
            high = middle - 1
    return low
