"""Turn papers and verdicts into a Digest, and a Digest into HTML, Markdown and plain text through Jinja."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path

import css_inline
import jinja2

from digest.config import OutputConfig, Profile
from digest.models import Digest, Entry, Paper, Rendered, Usage, Verdict

OTHER_GROUP = "Also relevant"
AUTHORS_SHOWN = 5


def package_templates() -> Path:
    """The templates shipped in the wheel, or, in a source checkout, the repository's templates/ folder."""
    installed = Path(__file__).parent / "templates"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "templates"


def build_digest(
    profile: Profile,
    announced: dt.date,
    categories: list[str],
    papers: Iterable[Paper],
    verdicts: Mapping[str, Verdict],
    unclassified: int,
    usage: Usage,
    cost: float | None,
) -> Digest:
    """Pick the papers at or above the profile's min_score, grouped by the interest they match best."""
    papers = list(papers)
    chosen = [
        Entry(paper=p, verdict=verdicts[p.key])
        for p in papers
        if p.key in verdicts and verdicts[p.key].relevant and verdicts[p.key].score >= profile.min_score
    ]
    groups: dict[str, list[Entry]] = {}
    for entry in chosen:
        interests = entry.verdict.matched_interests
        groups.setdefault(interests[0].strip() if interests else OTHER_GROUP, []).append(entry)
    for entries in groups.values():
        entries.sort(key=lambda e: (-e.verdict.score, e.paper.title.lower()))
    ordered = sorted(groups.items(), key=lambda g: (g[0] == OTHER_GROUP, -g[1][0].verdict.score, g[0].lower()))
    return Digest(
        profile=profile.name,
        announced=announced,
        categories=categories,
        groups=ordered,
        papers_read=len([p for p in papers if p.key in verdicts]),
        unclassified=unclassified,
        min_score=profile.min_score,
        usage=usage,
        cost=cost,
    )


def subject(digest: Digest) -> str:
    count = digest.relevant_count
    papers = "paper" if count == 1 else "papers"
    return f"arXiv digest - {digest.announced:%d %b %Y} - {count} {papers} for you"


def short_authors(authors: list[str], shown: int = AUTHORS_SHOWN) -> str:
    if len(authors) <= shown:
        return ", ".join(authors)
    return f"{', '.join(authors[:shown])} and {len(authors) - shown} more"


class Renderer:
    """Templates from output.templates first, the package's as fallback; HTML autoescaped throughout."""

    def __init__(self, output: OutputConfig) -> None:
        folders = [package_templates()] if output.templates is None else [output.templates, package_templates()]
        self._format = output.format
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["short_authors"] = short_authors
        # Mail clients ignore most <style> blocks: the CSS goes into style attributes; nothing is fetched.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False)

    def render(self, digest: Digest) -> Rendered:
        context = {"digest": digest, "subject": subject(digest)}
        text = self._env.get_template("digest.txt.j2").render(context)
        if self._format == "markdown":
            markdown = self._env.get_template("digest.md.j2").render(context)
            return Rendered(subject=subject(digest), text=text, html=None, markdown=markdown)
        html = self._inliner.inline(self._env.get_template("digest.html.j2").render(context))
        return Rendered(subject=subject(digest), text=text, html=html, markdown=None)
