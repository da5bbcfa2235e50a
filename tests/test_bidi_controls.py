"""Unicode's bidirectional controls in what arXiv and the LLM write: U+202E turns the text after it around (a title
ending "\u202efdp.exe" reads "exe.pdf"), and the others reorder or hide text as invisibly. Cut where untrusted text
enters, as terminal escapes are, they reach neither the email nor the state nor the screen."""

from __future__ import annotations

import re
import sqlite3

from tests.helpers import CL_FEED, base_config, first_items, run_cli

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_bidi_controls_from_a_title_and_a_reason_reach_no_output(tmp_path, feed_server, fake_llm, write_config):
    (feed_url, feed), (llm_url, llm) = feed_server, fake_llm
    original = CL_FEED.read_text()
    title = re.search(r"<title>(Generating in the Limit[^<]*)</title>", original)
    assert title is not None
    hostile = f"Invoice{''.join(BIDI_CONTROLS)}\u202efdp.exe {title[1]}"
    feed.feeds["/rss/cs.CL"] = first_items(original.replace(title[1], hostile, 1).encode(), 12)
    llm.reason_suffix = " \u2067right to left\u2069 \u202eesrever"
    run = run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url))))
    assert run.returncode == 0, run.stdout + run.stderr
    written = [path.read_text() for path in (tmp_path / "outbox" / "me").iterdir()]
    assert any("Invoice fdp.exe Generating" in text for text in written)  # the title, without its controls
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        dump = "\n".join(db.iterdump())
    for text in [*written, dump, run.stdout, run.stderr]:
        assert not set(BIDI_CONTROLS) & set(text)
