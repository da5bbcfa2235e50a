"""Rendering a digest and delivering it to a real SMTP server on loopback or to the outbox folder."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import re
import subprocess
import sys
import zipfile
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from digest.channels import OutboxChannel, Result, SMTPChannel
from digest.channels.message import addressed, build_message, new_message_id
from digest.config import OutputConfig, Profile, SMTPConfig
from digest.errors import DeliveryError
from digest.links import Links
from digest.models import Delivery, Digest, Usage, Verdict, best_first
from digest.pipeline.select import build_digest
from digest.render import HTML_BUDGET, Renderer, short_authors
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, CV_FEED
from tests.servers import html_titles, make_tls, smtp_server

REPO = Path(__file__).parent.parent
PAPERS = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
PROFILE = Profile(name="me", email=["me@example.org"], interests="LLMs", min_score=6)
DAY = dt.date(2026, 6, 30)


def _verdicts(scores: dict[int, int]) -> dict[str, Verdict]:
    return {
        PAPERS[i].key: Verdict(
            paper_key=PAPERS[i].key,
            score=score,
            reason=f"Reason {i} <b>bold</b>",
            matched_interests=["evaluation"] if i % 2 else ["LLM inference"],
        )
        for i, score in scores.items()
    }


def _digest(papers=PAPERS[:6], scores=None):
    verdicts = _verdicts(scores or {0: 9, 1: 7, 2: 3, 3: 6, 4: 8, 5: 2})
    return build_digest(PROFILE, DAY, ["cs.CL"], papers, verdicts, 2, Usage(requests=6), 0.0012)


def test_digest_keeps_papers_at_or_above_min_score_grouped_and_sorted():
    digest = _digest()
    assert digest.relevant_count == 4
    groups = dict(digest.groups)
    assert [e.verdict.score for e in groups["LLM inference"]] == [9, 8]
    assert [e.verdict.score for e in groups["evaluation"]] == [7, 6]
    assert digest.groups[0][0] == "LLM inference"  # the group with the best paper first
    assert digest.papers_read == 6 and digest.unclassified == 2


def test_authors_are_shortened_after_five():
    assert short_authors(["A", "B", "C"]) == "A, B, C"
    assert short_authors([c for c in "ABCDEFGHIJKLMNOPQ"]) == "A, B, C, D, E and 12 more"


def test_untrusted_text_is_escaped_in_html():
    hostile = PAPERS[0].model_copy(update={"title": "<script>alert('x')</script> Attention & more"})
    verdicts = _verdicts({0: 9})
    digest = build_digest(PROFILE, DAY, ["cs.CL"], [hostile], verdicts, 0, Usage(), None)
    rendered = Renderer(OutputConfig()).render(digest)
    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert('x')&lt;/script&gt; Attention &amp; more" in rendered.html
    assert "Reason 0 &lt;b&gt;bold&lt;/b&gt;" in rendered.html
    assert "<script>alert('x')</script>" in rendered.text  # plain text stays plain


def test_the_message_is_multipart_alternative_with_consistent_parts():
    rendered = Renderer(OutputConfig()).render(_digest())
    message = build_message(rendered, "digest@example.org")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "arXiv digest - 30 Jun 2026 - 4 papers for you"
    one = email.message_from_bytes(
        addressed(message.as_bytes(), "me@example.org", "<1@example.org>"), policy=email.policy.default
    )
    assert (one["To"], one["Message-ID"]) == ("me@example.org", "<1@example.org>")  # one recipient, its own id
    assert one["Date"]
    titles = html_titles(message)
    assert len(titles) == 4
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert all(" ".join(t.split()) in " ".join(text.split()) for t in titles)


def test_markdown_output():
    rendered = Renderer(OutputConfig(format="markdown")).render(_digest())
    assert rendered.html is None and rendered.markdown is not None
    assert rendered.markdown.startswith("# arXiv digest")
    assert f"]({PAPERS[0].abs_url})" in rendered.markdown


def test_user_templates_come_first(tmp_path):
    (tmp_path / "digest.txt.j2").write_text("custom {{ digest.relevant_count }}")
    rendered = Renderer(OutputConfig(templates=tmp_path)).render(_digest())
    assert rendered.text == "custom 4"
    assert rendered.html is not None and "<table" in rendered.html  # the package's template as fallback


def _deliver(channel: Any, recipients: list[str], message: bytes | None = None) -> dict[str, Result]:
    """Deliver to each recipient through `channel`; the result reported for each."""
    results: dict[str, Result] = {}
    deliveries = [
        Delivery(
            digest_id=1,
            profile="me",
            announced=DAY,
            recipient=r,
            message_id=new_message_id("digest@example.org"),
            message=message or _message(),
        )
        for r in recipients
    ]
    asyncio.run(
        channel.deliver(deliveries, lambda d, result: results.__setitem__(d.recipient, result), asyncio.Event())
    )
    return results


def test_smtp_delivery_to_a_real_server(smtp):
    port, inbox = smtp
    channel = SMTPChannel(SMTPConfig(host="127.0.0.1", port=port, security="none"), "digest@example.org")
    assert _deliver(channel, ["me@example.org"]) == {"me@example.org": Result("sent")}
    sender, recipients, received = inbox.messages[0]
    assert (sender, recipients) == ("digest@example.org", ["me@example.org"])
    assert received["To"] == "me@example.org" and received["Message-ID"].endswith("@example.org>")


def test_smtp_server_down_is_a_delivery_error():
    channel = SMTPChannel(SMTPConfig(host="127.0.0.1", port=1, security="none"), "d@example.org")
    with pytest.raises(DeliveryError, match=r"cannot connect to SMTP server 127\.0\.0\.1:1"):
        _deliver(channel, ["me@example.org"])


def test_starttls_not_offered_is_reported_as_such(smtp):
    port, _ = smtp
    channel = SMTPChannel(SMTPConfig(host="127.0.0.1", port=port, security="starttls"), "d@example.org")
    with pytest.raises(DeliveryError, match="does not offer STARTTLS, which security: starttls needs"):
        asyncio.run(channel.check())


def test_auth_not_offered_says_so_and_why(smtp):
    port, _ = smtp
    config = SMTPConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "username": "digest", "password": "pw"}
    )
    with pytest.raises(DeliveryError) as raised:
        asyncio.run(SMTPChannel(config, "d@example.org").check())
    assert "does not offer AUTH, which logging in as digest needs (most servers offer it only over TLS)" in str(
        raised.value
    )
    assert "set email.smtp.security to starttls or ssl" in str(raised.value)


def test_outbox_writes_the_digest_and_the_eml_addressed_to_the_profiles_readers(tmp_path):
    channel = OutboxChannel(tmp_path, "d@example.org", {"me": ["me@example.org", "lab@example.org"]})
    assert _deliver(channel, ["outbox"]) == {"outbox": Result("sent")}
    assert "<table" in (tmp_path / "me" / "2026-06-30.html").read_text()
    eml = email.message_from_bytes((tmp_path / "me" / "2026-06-30.eml").read_bytes(), policy=email.policy.default)
    assert eml["To"] == "me@example.org, lab@example.org"
    assert eml["Subject"] == "arXiv digest - 30 Jun 2026 - 4 papers for you"
    # A profile with no addresses (an outbox-only setup) is addressed to the sender, so the .eml still opens.
    _deliver(OutboxChannel(tmp_path / "alone", "d@example.org", {}), ["outbox"])
    alone = (tmp_path / "alone" / "me" / "2026-06-30.eml").read_bytes()
    assert email.message_from_bytes(alone, policy=email.policy.default)["To"] == "d@example.org"


WEB_TEMPLATES = [f"web/{p.name}" for p in (REPO / "templates" / "web").glob("*.j2")]


def test_the_wheel_ships_the_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("digest-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("digest.html.j2", "digest.md.j2", "digest.txt.j2", *WEB_TEMPLATES):
        assert f"digest/templates/{template}" in names


def _message() -> bytes:
    return build_message(Renderer(OutputConfig()).render(_digest()), "digest@example.org").as_bytes()


def test_starttls_and_login(tmp_path):
    tls = make_tls(str(tmp_path))
    with smtp_server(tls=tls, login=("digest", "s3cret")) as (port, inbox):
        config = SMTPConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": port,
                "security": "starttls",
                "username": "digest",
                "password": "s3cret",
                "ca_file": tls.ca_file,
            }
        )
        results = _deliver(SMTPChannel(config, "digest@example.org"), ["me@example.org"])
    assert results == {"me@example.org": Result("sent")}
    assert inbox.logins == ["digest"]
    assert inbox.messages[0][1] == ["me@example.org"]


def test_implicit_tls(tmp_path):
    tls = make_tls(str(tmp_path))
    with smtp_server(tls=tls, implicit_tls=True) as (port, inbox):
        config = SMTPConfig(host="127.0.0.1", port=port, security="ssl", ca_file=Path(tls.ca_file))
        _deliver(SMTPChannel(config, "digest@example.org"), ["me@example.org"])
    assert len(inbox.messages) == 1


def test_a_refused_login_is_reported_as_such_without_the_password(tmp_path):
    tls = make_tls(str(tmp_path))
    with smtp_server(tls=tls, login=("digest", "s3cret")) as (port, inbox):
        config = SMTPConfig.model_validate(
            {"host": "127.0.0.1", "port": port, "username": "digest", "password": "wrong-pass", "ca_file": tls.ca_file}
        )
        with pytest.raises(DeliveryError) as raised:
            _deliver(SMTPChannel(config, "d@example.org"), ["me@example.org"])
    assert "refused the login for user digest" in str(raised.value)
    assert "wrong-pass" not in str(raised.value)
    assert inbox.messages == []


def test_an_untrusted_certificate_is_a_tls_failure_not_a_connection_failure(tmp_path):
    tls = make_tls(str(tmp_path))
    with smtp_server(tls=tls) as (port, _):
        config = SMTPConfig(host="127.0.0.1", port=port, security="starttls")
        with pytest.raises(
            DeliveryError, match=r"TLS with SMTP server 127\.0\.0\.1:\d+ failed: CERTIFICATE_VERIFY_FAILED"
        ):
            asyncio.run(SMTPChannel(config, "d@example.org").check())


def test_a_refused_recipient_is_reported_and_the_others_are_delivered(tmp_path):
    with smtp_server(refuse={"you@example.org": "550 5.1.1 No such user here"}) as (port, inbox):
        config = SMTPConfig(host="127.0.0.1", port=port, security="none")
        results = _deliver(SMTPChannel(config, "d@example.org"), ["me@example.org", "you@example.org"])
    assert results["me@example.org"] == Result("sent")
    assert results["you@example.org"].status == "failed" and "550" in results["you@example.org"].reason
    assert [m[1] for m in inbox.messages] == [["me@example.org"]]


def _long_day(papers=PAPERS, profile=PROFILE) -> Digest:
    """Every paper of the real day relevant, each with a reason of a realistic length."""
    reason = "Directly relevant to your evaluation methodology interest: it shows how benchmark scores mislead."
    verdicts = {
        p.key: Verdict(paper_key=p.key, score=6 + i % 5, reason=reason, matched_interests=[f"interest {i % 3}"])
        for i, p in enumerate(papers)
    }
    return build_digest(profile, DAY, ["cs.CL"], papers, verdicts, 0, Usage(requests=len(papers)), 0.0137)


def test_a_long_digest_stays_under_the_size_at_which_gmail_cuts_it_and_names_every_paper():
    """Gmail clips a message's HTML past about 102 kB, footer and archive link with it. 137 papers in full are
    about 290 kB: the best go in full, the others by title, each in its group, and the top says so."""
    digest = _long_day()
    html = Renderer(OutputConfig()).render(digest).html
    assert html is not None and len(html.encode()) <= HTML_BUDGET
    titles = [unescape(t) for t in re.findall(r'<a href="https://arxiv.org/abs/[^"]+"[^>]*>(.*?)</a>', html, re.S)]
    assert sorted(titles) == sorted(p.title for p in PAPERS)  # every paper once, in full or by title
    full = re.search(r"A long day: the best (\d+) in full, the next (\d+) by title", html)
    assert full is not None and int(full[1]) + int(full[2]) == 137 and int(full[1]) >= 15, html[:3000]
    best = sorted(digest.entries, key=best_first)[: int(full[1])]
    assert all(f'id="{e.paper.anchor}"' in html for e in best)  # the best are the ones in full

    short = Renderer(OutputConfig()).render(_digest()).html  # a short one is all in full, as before
    assert short is not None and "A long day" not in short and short.count('class="paper"') == 4


def test_on_a_long_day_every_paper_the_email_lists_can_be_rated_and_it_stays_under_the_budget():
    """The papers listed by title carried no rating links: the reader could rate only those in full. Now each
    listed paper has both, compact ones by title; a rating link is some 130 bytes, so fewer fit by title, and the
    rest are counted, in the archive (where each can be rated too)."""
    links = Links("https://digest.example.org", "s" * 32)
    papers = parse_feed(CV_FEED.read_bytes(), url="t", categories=["cs.CV"], announce_types=["new", "cross"]).papers
    assert len(papers) == 301
    digest = _long_day(papers, PROFILE.model_copy(update={"min_score": 1}))
    html = Renderer(OutputConfig(), links).render(digest).html
    assert html is not None and len(html.encode()) <= HTML_BUDGET
    rows = [row for row in html.split("<tr>") if 'class="title"' in row or 'class="brief"' in row]
    for row in rows:  # a paper's own row: in full, or by title
        paper_id = re.search(r'href="https://arxiv.org/abs/([^"]+)"', row)
        said = [links.read(token) for token in re.findall(r'href="https://digest\.example\.org/r/([^"]+)"', row)]
        assert paper_id is not None and [(t.a, t.r) for t in said if t] == [(paper_id[1], 1), (paper_id[1], -1)], row
    counted = re.search(
        r"A long day: the best (\d+) (?:in full, the next (\d+) )?by title; (\d+) papers more in the archive", html
    )
    assert counted is not None, html[:3000]
    shown = int(counted[1]) + int(counted[2] or 0)
    assert shown == len(rows) >= 100 and shown + int(counted[3]) == 301  # the rest counted, not lost
    assert html.index(links.archive("me")) < html.index('class="brief"')  # the archive link is at the top
    assert html.index("Past digests, and a feed for your feed reader") > html.rindex("class=")  # the footer too


def test_the_papers_the_llm_could_not_judge_can_be_rated_too():
    links = Links("https://digest.example.org", "s" * 32)
    unjudged = PAPERS[10:12]
    digest = _digest().model_copy(update={"unclassifiable": unjudged})
    for output in ("html", "markdown"):
        rendered = Renderer(OutputConfig(format=output), links).render(digest)  # type: ignore[arg-type]
        for part in (rendered.text, rendered.html or rendered.markdown or ""):
            tokens = re.findall(r"https://digest\.example\.org/r/([A-Za-z0-9_.-]+)", part)
            said = {(t.a, t.r) for t in map(links.read, tokens) if t is not None}
            assert {(p.id, r) for p in unjudged for r in (1, -1)} <= said, output


def test_when_even_the_titles_do_not_fit_the_rest_is_counted_and_linked():
    links = Links("https://digest.example.org", "s" * 32)
    html = Renderer(OutputConfig(), links).html(_long_day(), budget=30_000)
    assert len(html.encode()) <= 30_000
    cut = re.search(r"the (?:best|next) (\d+) by title; (\d+) papers more in the archive", html)
    assert cut is not None and int(cut[1]) + int(cut[2]) == 137, html[:3000]
    without_web = Renderer(OutputConfig()).html(_long_day(), budget=30_000)
    assert "more in this email's plain-text part" in without_web


def test_each_paper_shows_the_opening_of_its_abstract_under_its_title():
    rendered = Renderer(OutputConfig(format="html")).render(_digest())
    assert rendered.html is not None
    first = PAPERS[0].abstract.split(". ")[0]  # the first sentence
    assert first in rendered.html and first in rendered.text
    assert rendered.html.index(PAPERS[0].title) < rendered.html.index(first) < rendered.html.index("Why:")
    assert PAPERS[0].abstract not in rendered.text  # the opening, not all of it
