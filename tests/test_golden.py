"""The rendered digest for a fixed set of real papers: golden files, and a real browser at phone and desktop
widths. Regenerate the golden files after an intended change with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest

from digest.config import OutputConfig, Profile
from digest.links import Links
from digest.models import Digest, Usage, Verdict
from digest.pipeline.select import build_digest
from digest.render import Renderer
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED

GOLDEN = Path(__file__).parent / "golden"
PAPERS = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
INTERESTS = ["evaluation methodology for LLMs", "KV-cache compression"]


def fixed_digest() -> Digest:
    chosen = PAPERS[:12]
    long_title = chosen[3].model_copy(
        update={"title": "An Unbreakable " + "Supercalifragilistic" * 6 + " Title <b>with markup</b> & more"}
    )
    many_authors = chosen[4].model_copy(update={"authors": [f"Author {n}" for n in range(1, 18)]})
    papers = [*chosen[:3], long_title, many_authors, *chosen[5:]]
    verdicts = {
        p.key: Verdict(
            paper_key=p.key,
            score=[9, 7, 2, 8, 6, 3, 10, 6, 1, 7, 8, 4][n],
            reason=f"One sentence for you about paper {n}, with <i>markup</i> that must stay text.",
            matched_interests=[INTERESTS[n % 2]] if n % 4 else [],
        )
        for n, p in enumerate(papers)
    }
    profile = Profile(name="me", interests="LLM evaluation and inference", min_score=6)
    usage = Usage(requests=12, prompt_tokens=7200, cached_tokens=3000, completion_tokens=600)
    return build_digest(profile, dt.date(2026, 6, 30), ["cs.CL", "cs.LG"], papers, verdicts, 3, usage, 0.0021)


@pytest.mark.parametrize(
    ("output_format", "part", "name"),
    [
        ("html", "html", "digest.html"),
        ("markdown", "markdown", "digest.md"),
        ("html", "text", "digest.txt"),
    ],
)
def test_rendering_matches_the_golden_files(output_format, part, name):
    rendered = Renderer(OutputConfig(format=output_format)).render(fixed_digest())
    text = getattr(rendered, part)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{name} changed; if intended, run with UPDATE_GOLDEN=1 and review the diff"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The digest goes into an iframe of the tested width (headless Chromium will not make a window narrower than
# 500 px); srcdoc makes it same-origin, so the page around it can measure it.
MEASURE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="border:0;width:{width}px;height:900px" srcdoc="{srcdoc}"></iframe>
<script>
  document.getElementById('mail').addEventListener('load', () => {{
    const doc = document.getElementById('mail').contentDocument;
    const titles = [...doc.querySelectorAll('p.title a')].map(a => {{
      const r = a.getBoundingClientRect();
      return {{left: r.left, right: r.right, width: r.width, height: r.height}};
    }});
    const buttons = [...doc.querySelectorAll('p.rate a')].map(a => {{
      const r = a.getBoundingClientRect();
      return {{width: r.width, height: r.height}};
    }});
    const out = document.createElement('pre');
    out.id = 'measure';
    out.textContent = JSON.stringify({{
      viewport: doc.defaultView.innerWidth,
      scrollWidth: doc.documentElement.scrollWidth,
      titles: titles,
      buttons: buttons,
    }});
    document.body.appendChild(out);
  }});
</script>
</body></html>
"""


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (.ci/run installs it)"
)
@pytest.mark.parametrize("width", [375, 1200])
def test_in_a_real_browser_nothing_scrolls_sideways_and_every_title_shows(tmp_path, width):
    assert CHROMIUM is not None, "CI must have chromium: .ci/run installs Debian's package"
    digest = fixed_digest()
    html = Renderer(OutputConfig(), Links("https://digest.example.org", "s" * 32)).render(digest).html
    assert html is not None
    page = tmp_path / "digest.html"
    page.write_text(MEASURE.format(width=width, srcdoc=escape(html, quote=True)))
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="measure">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-2000:]
    measure = json.loads(found.group(1).replace("&quot;", '"'))
    assert measure["viewport"] == width
    assert measure["scrollWidth"] <= width, "the page scrolls sideways"
    assert len(measure["titles"]) == digest.relevant_count
    for title in measure["titles"]:
        assert title["width"] > 0 and title["height"] > 0
        assert title["left"] >= 0 and title["right"] <= width
    # The rating links are buttons a thumb can hit: 44 px, as the mail clients' own (Apple's HIG minimum).
    assert len(measure["buttons"]) == 2 * digest.relevant_count
    assert all(button["height"] >= 44 and button["width"] >= 44 for button in measure["buttons"]), measure["buttons"]
