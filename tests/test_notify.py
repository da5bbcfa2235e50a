"""Chat and push destinations through Apprise's own URLs (json://, ntfy://, mmost://) aimed at a loopback server that
answers as those services do: each digest reaches each destination once, a passing failure is retried, a refusal
for good is reported once, what arXiv and the LLM wrote stays inert, and a long digest is cut to the service's
limit with a link to the rest."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import re
import sqlite3
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.config import Profile
from digest.links import Links
from digest.models import Usage, Verdict
from digest.pipeline.select import build_digest
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, base_config, first_items, run_cli
from tests.servers import ChatServer, chat_services, keyword_judge, serve_asgi, slow_greeting_server

ROOT = Path(__file__).parent.parent

TOKEN = "xoxTOKENabcdefghijklmnopqrstu"  # Mattermost's incoming-webhook key: a secret, never to be shown
NTFY_PASSWORD = "ntfyPASSWORDsecret"


@pytest.fixture
def chat() -> Iterator[tuple[str, ChatServer]]:
    app = ChatServer()
    with serve_asgi(app) as url:
        yield url.removeprefix("http://"), app


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[str, ChatServer, dict[str, str]]]:
    """The chat server as itself and as the hosted services (Telegram, Slack, Lark, ...), with the environment that
    takes a process's requests to them there."""
    app = ChatServer()
    with chat_services(app, tmp_path) as (host, environment):
        yield host, app, environment


def notify_config(
    tmp_path: Path, feed_server: Any, fake_llm: Any, host: str, *, papers: int = 12, **profile: Any
) -> dict[str, Any]:
    (feed_url, feed), (llm_url, _) = feed_server, fake_llm
    feed.feeds["/rss/cs.CL"] = first_items(feed.feeds["/rss/cs.CL"], papers)  # a small day: what matters is delivery
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(
        {
            "email": [],
            "notify": ["${JSON_HOOK}", "${NTFY_URL}", "${MATTERMOST_URL}"],
            **profile,
        }
    )
    return config


def urls(host: str) -> dict[str, str]:
    return {
        "JSON_HOOK": f"json://{host}/digest-hook",
        "NTFY_URL": f"ntfy://reader:{NTFY_PASSWORD}@{host}/papers",
        "MATTERMOST_URL": f"mmost://{host}/{TOKEN}",
    }


MATTERMOST = f"/hooks/{TOKEN}"


def test_each_destination_gets_each_digest_once_and_a_500_is_retried_next_run(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    server.script = {"/digest-hook": [500]}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host))
    env = urls(host)

    first = run_cli("run", "--config", str(path), env=env)
    assert first.returncode == 1, first.stdout + first.stderr  # one destination is still pending
    assert "Traceback" not in first.stderr
    assert len(server.of("/")) == 1 and len(server.of(MATTERMOST)) == 1 and not server.of("/digest-hook")
    assert "pending (retried next run)" in first.stdout and "HTTP 500 Internal Server Error" in first.stdout
    second = run_cli("run", "--config", str(path), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert [len(server.of(p)) for p in ("/digest-hook", "/", MATTERMOST)] == [1, 1, 1]  # the others not again

    ntfy = server.of("/")[0]
    assert ntfy["topic"] == "papers" and ntfy["title"].startswith("arXiv digest - 30 Jun 2026 - ")
    sent = next(r for r in server.received if r["path"] == "/")
    assert sent["headers"]["x-markdown"] == "yes"  # asked as Markdown, so that its escapes are read as such
    text = ntfy["message"]
    assert re.search(r"\*\*8/10\*\* .+\n.+\nhttps://arxiv\.org/abs/2606\.\d{5}", text)
    assert "language model" in text.lower()
    mattermost = server.of(MATTERMOST)[0]["text"]
    assert mattermost.startswith("# arXiv digest - 30 Jun 2026")
    for output in (first.stdout + first.stderr, second.stdout + second.stderr):
        assert TOKEN not in output and NTFY_PASSWORD not in output
    status = run_cli("status", "--config", str(path))  # no variable set: status needs no notify URL
    assert status.returncode == 0, status.stderr
    assert "every digest has reached every recipient" in status.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        rows = db.execute("SELECT recipient, status, attempts FROM deliveries ORDER BY recipient").fetchall()
        dump = "\n".join(db.iterdump())
    assert [(r[1], r[2]) for r in rows] == [("sent", 2), ("sent", 1), ("sent", 1)]
    assert {r[0].split(" ")[0] for r in rows} == {f"json://{host}", f"mmost://{host}", f"ntfy://{host}"}
    assert TOKEN not in dump and NTFY_PASSWORD not in dump


def test_a_destination_refusing_for_good_fails_once_and_never_blocks_the_others(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    server.script = {"/": [401], MATTERMOST: [400]}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host))
    env = urls(host)

    first = run_cli("run", "--config", str(path), env=env)
    assert first.returncode == 1
    assert first.stdout.count("could not be delivered to") == 2, first.stdout
    assert "for good" in first.stdout and "check this notify URL" in first.stdout
    assert len(server.of("/digest-hook")) == 1
    second = run_cli("run", "--config", str(path), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(server.refused) == 2 and not server.of("/") and not server.of(MATTERMOST)  # never asked again
    status = run_cli("status", "--config", str(path))
    assert status.stdout.count(" failed  1 tries ") == 2 and "HTTP 401 Unauthorized: unauthorized" in status.stdout
    assert TOKEN not in first.stdout + second.stdout + status.stdout
    assert NTFY_PASSWORD not in first.stdout + second.stdout + status.stdout


TELEGRAM = "123456789:ABCdefGHIjklMNOpqrSTUvwxYZ"
TELEGRAM_FOR_CONTENT = "987654321:ZYXwvuTSRqpoNMLkjiHGFedCBA"


def test_what_a_service_answers_decides_not_its_plugins_log_lines(
    tmp_path, feed_server, fake_llm, services, write_config
):
    """A 200 whose body refuses is no delivery (a JSON webhook's {"ok": false}; ntfy's and Mattermost's error
    objects, whose status says for good). Telegram's owner detection refused (403) is a refusal of the URL; a
    message too long (400) is a refusal of the message, and says so."""
    host, server, environment = services
    server.script = {
        "/digest-hook": [(200, {"ok": False, "error": "no_such_channel"})],
        "/": [(200, {"code": 40301, "http": 403, "error": "forbidden"})],
        MATTERMOST: [(200, {"id": "api.webhook.incoming.text.app_error", "message": "No text", "status_code": 400})],
        f"/bot{TELEGRAM}/getUpdates": [(403, {"ok": False, "error_code": 403, "description": "Forbidden"})],
        f"/bot{TELEGRAM_FOR_CONTENT}/sendMessage": [
            (400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"})
        ],
    }
    notify = ["${JSON_HOOK}", "${NTFY_URL}", "${MATTERMOST_URL}", "${OWNER}", "${CONTENT}"]
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=notify))
    telegram = {"OWNER": f"tgram://{TELEGRAM}/", "CONTENT": f"tgram://{TELEGRAM_FOR_CONTENT}/12315544/"}
    run = run_cli("run", "--config", str(path), env=urls(host) | telegram | environment)
    assert run.returncode == 1, run.stdout + run.stderr
    assert not server.received and len(server.refused) == 5  # every service was asked once, and none took it
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        said = db.execute("SELECT recipient, status || ': ' || last_error FROM deliveries").fetchall()

    def of(scheme: str) -> list[str]:
        return sorted(outcome for recipient, outcome in said if recipient.startswith(scheme))

    assert of("json://") == ["pending: HTTP 200 OK, refused: no_such_channel"]
    assert of("ntfy://") == ["failed: HTTP 200 OK, refused: forbidden"]
    assert of("mmost://") == ["failed: HTTP 200 OK, refused: No text"]
    assert of("tgram://") == [
        "failed: HTTP 400 Bad Request: Bad Request: message is too long",
        "failed: HTTP 403 Forbidden: Forbidden",
    ]
    refusals = [line for line in run.stdout.splitlines() if "could not be delivered to tgram://" in line]
    owner = next(line for line in refusals if "HTTP 403 Forbidden" in line)
    content = next(line for line in refusals if "message is too long" in line)
    assert "check this notify URL" in owner and "check this notify URL" not in content
    assert "the service refused this message, not the URL" in content


SLACK_BOT = "xoxb-1234-1234-abc123def456"
LARK = "abcdef12-3456-7890-abcd-ef1234567890"


@pytest.mark.long
def test_refusals_no_answer_names_fail_after_three_runs_and_hold_up_no_one(
    tmp_path, feed_server, fake_llm, services, write_config
):
    """Slack's Web API refuses with a 200 (channel_not_found), Lark with a 200 and a code of its own: nothing says
    for good, so each is retried; on the third run in a row that takes nothing, its digest fails with the last
    reason, digest status shows it, and it is not asked again. The JSON webhook beside them gets its digest at once."""
    host, server, environment = services
    slack, lark = "/api/chat.postMessage", f"/open-apis/bot/v2/hook/{LARK}"
    lark_refusal = {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
    server.script = {slack: [(200, {"ok": False, "error": "channel_not_found"})] * 3, lark: [(200, lark_refusal)] * 3}
    notify = ["${JSON_HOOK}", "${SLACK}", "${LARK}"]
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=notify))
    env = urls(host) | {"SLACK": f"slack://{SLACK_BOT}/#papers", "LARK": f"lark://{LARK}"} | environment
    runs = [run_cli("run", "--config", str(path), env=env) for _ in range(3)]
    assert [r.returncode for r in runs] == [1, 1, 1], runs[-1].stdout + runs[-1].stderr
    assert len(server.of("/digest-hook")) == 1 and len(server.refused) == 6
    assert "pending (retried next run)" in runs[1].stdout and "refused for good" not in runs[1].stdout
    given_up = [line for line in runs[2].stdout.splitlines() if "has taken no digest on 3 runs in a row" in line]
    assert len(given_up) == 2, runs[2].stdout
    assert any("HTTP 200 OK, refused: channel_not_found" in line for line in given_up)
    assert any("HTTP 200 OK, refused: sign match fail" in line for line in given_up)
    fourth = run_cli("run", "--config", str(path), env=env)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert len(server.refused) == 6 and not server.script[slack] and not server.script[lark]  # not asked again
    status = run_cli("status", "--config", str(path))
    assert status.stdout.count(" failed  3 tries  HTTP 200 OK, refused: ") == 2, status.stdout


def test_a_retry_after_is_remembered_and_nothing_is_asked_before_it(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    server.script = {"/digest-hook": [(429, None, {"Retry-After": "3600"})]}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=["${JSON_HOOK}"]))
    first = run_cli("run", "--config", str(path), env=urls(host))
    assert first.returncode == 1 and "HTTP 429 Too Many Requests; it asks for nothing before " in first.stdout
    second = run_cli("run", "--config", str(path), env=urls(host))
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(server.refused) == 1 and not server.received  # not asked
    assert re.search(r"json://\S+ \(\w+\) asked to be sent nothing before \S+ \S+ UTC \(Retry-After\)", second.stdout)
    assert "still pending 1" in second.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # an hour later
        db.execute(
            "UPDATE destinations SET not_before = ?", ((dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat(),)
        )
    third = run_cli("run", "--config", str(path), env=urls(host))
    assert third.returncode == 0 and len(server.of("/digest-hook")) == 1, third.stdout + third.stderr


@pytest.mark.long
def test_a_service_that_never_finishes_answering_costs_its_deadline_and_gets_the_digest_once(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    """A JSON webhook that takes the POST and answers a byte every 3 s, for ever: the process sending to it is
    killed at the deadline, the run ends on time and says the message may have arrived, and it is never sent again.
    The destination after it gets its digest all the same."""
    from digest.channels.notify import SEND_SECONDS

    host, server = chat
    taken: list[bytes] = []
    with slow_greeting_server(3.0, requests=taken) as port:
        notify = [f"json://127.0.0.1:{port}/stuck", "${JSON_HOOK}"]
        path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=notify))
        # Fetching, judging 12 papers and the other destination take a few seconds: the run ends long before this.
        first = run_cli("run", "--config", str(path), env=urls(host), timeout=SEND_SECONDS + 20)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "Traceback" not in first.stderr and len(taken) == 1 and b"POST /stuck" in taken[0]
        assert f"may or may not have reached json://127.0.0.1:{port} (" in first.stdout
        assert f"did not finish within {SEND_SECONDS:g} s, after its request went out" in first.stdout
        assert "uncertain 1" in first.stdout and len(server.of("/digest-hook")) == 1
        second = run_cli("run", "--config", str(path), env=urls(host), timeout=SEND_SECONDS)
        assert second.returncode == 0, second.stdout + second.stderr
        assert len(taken) == 1 and len(server.of("/digest-hook")) == 1  # neither is sent again
    status = run_cli("status", "--config", str(path))
    assert re.search(rf"json://127\.0\.0\.1:{port} \(\w+\) uncertain 1 tries  did not finish", status.stdout)


def test_what_a_service_echoes_of_a_password_is_never_shown_or_stored(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    """A service that echoes the request's headers in its errors (a 401 and a 500 here) sends back the password in
    base64 (Authorization: Basic), and the URL writes it percent-encoded: no form of it reaches the output, in
    either log format, the state or digest status."""
    import base64
    from urllib.parse import quote

    host, server = chat
    server.echo_headers = True
    server.script = {"/digest-hook": [401, 401], "/": [500, 500]}
    password = "PASS/WORD+secret42"
    written = quote(password, safe="")
    env = {"JSON_HOOK": f"json://reader:{written}@{host}/digest-hook", "NTFY_URL": f"ntfy://reader:{written}@{host}/t"}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=["${JSON_HOOK}", "${NTFY_URL}"]))
    said = []
    for log_format in ("text", "json"):
        (tmp_path / "state.sqlite3").unlink(missing_ok=True)
        run = run_cli("-v", "run", "--config", str(path), env=env | {"DIGEST_LOG_FORMAT": log_format})
        assert run.returncode == 1, run.stdout + run.stderr
        said += [run.stdout, run.stderr]
    credential = base64.b64encode(f"reader:{password}".encode()).decode()
    assert {r["headers"]["authorization"] for r in server.refused} == {f"Basic {credential}"}
    assert "[redacted]" in said[0]  # the 401's words were the echo: shown, redacted
    said.append(run_cli("status", "--config", str(path)).stdout)
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        said.append("\n".join(db.iterdump()))
    for form in (credential, password, written, "PASS/WORD", quote(credential, safe="")):
        assert not [text for text in said if form in text], form


HOSTILE = (
    "@channel @here <!channel> [click me](https://evil.example/x) ![pixel](https://evil.example/p.png) "
    "<b>bold</b> **loud** https://evil.example/bare"
)


def test_what_arxiv_and_the_llm_wrote_stays_inert_in_chat(tmp_path, feed_server, fake_llm, chat, write_config):
    host, server = chat
    (_, feed), (_, llm) = feed_server, fake_llm
    original = CL_FEED.read_text()
    first_title = re.search(r"<title>(Generating in the Limit[^<]*)</title>", original)
    assert first_title is not None
    hostile = original.replace(first_title[1], HOSTILE.replace("&", "&amp;").replace("<", "&lt;"), 1)
    feed.feeds["/rss/cs.CL"] = hostile.encode()  # its first 12 items, by notify_config
    llm.judge = lambda title, abstract: (True, 9) if "evil" in title else (False, 1)
    llm.reason_suffix = " Ask @everyone: [here](https://evil.example/r)"
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=["${MATTERMOST_URL}"]))
    run = run_cli("run", "--config", str(path), env=urls(host))
    assert run.returncode == 0, run.stdout + run.stderr
    text = server.of(MATTERMOST)[0]["text"]
    assert "evil.example" in text
    # No mention, link, image or markup survives: every @ is followed by a word joiner, every bracket escaped.
    assert not re.search(r"@(?!\u2060)\w", text)
    assert not re.search(r"(?<!\\)\[(?!more like|not for me)", text) and "](https://evil" not in text
    assert not re.search(r"(?<!\\)<", text) and "https://evil" not in text  # bare links broken: https\://
    assert "\\*\\*loud\\*\\*" in text


def test_a_digest_longer_than_the_service_takes_is_cut_with_a_link_to_the_rest(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    _, llm = fake_llm
    llm.judge = keyword_judge("the")  # every paper: 30 of them are far more than Mattermost's 4,000 characters
    config = notify_config(tmp_path, feed_server, fake_llm, host, papers=30, notify=["${MATTERMOST_URL}"])
    config["web"] = {"base_url": "https://digest.example.org", "secret": "s" * 32}
    run = run_cli("run", "--config", str(path := write_config(config)), env=urls(host))
    assert run.returncode == 0, run.stdout + run.stderr
    text = server.of(MATTERMOST)[0]["text"]
    assert len(text) <= 4000
    relevant = int(re.search(r"(\d+) papers for you of", text)[1])  # type: ignore[index]
    shown = len(re.findall(r"^https://arxiv\.org/abs/", text, re.M))
    more = re.search(r"and (\d+) more: (https://digest\.example\.org/a/me/[0-9a-f]{32}/)$", text)
    assert more is not None and shown + int(more[1]) == relevant and shown >= 5, text
    assert text.count("[more like this](https://digest.example.org/r/") == shown
    check = run_cli("check", "--config", str(path), env=urls(host))
    assert f"mmost://{host} (" in check.stdout and TOKEN not in check.stdout


def test_a_cut_message_says_where_the_rest_is_only_where_it_is(tmp_path, feed_server, fake_llm, chat, write_config):
    """Without the web side, the papers a cut message leaves out are in the email digest, if the profile has one;
    a profile that only notifies is told how many are not shown."""
    host, server = chat
    _, llm = fake_llm
    llm.judge = keyword_judge("the")
    config = notify_config(tmp_path, feed_server, fake_llm, host, papers=30, notify=["${MATTERMOST_URL}"])
    emailed = {"name": "lab", "email": ["lab@example.org"], "interests": "Language models.", "notify": ["${LAB_URL}"]}
    config["profiles"].append(emailed)
    lab = f"{TOKEN[:-3]}lab"
    run = run_cli("run", "--config", str(write_config(config)), env=urls(host) | {"LAB_URL": f"mmost://{host}/{lab}"})
    assert run.returncode == 0, run.stdout + run.stderr
    chat_only, with_email = server.of(MATTERMOST)[0]["text"], server.of(f"/hooks/{lab}")[0]["text"]
    assert re.search(r"\n\nand \d+ more not shown$", chat_only) and "email" not in chat_only
    assert re.search(r"\n\nand \d+ more: the email digest has them all$", with_email)


def test_a_url_apprise_cannot_read_is_a_config_error_that_does_not_show_it(
    tmp_path, feed_server, fake_llm, write_config
):
    config = notify_config(tmp_path, feed_server, fake_llm, "127.0.0.1:9", notify=["${BAD}", "not a url"])
    path = write_config(config)
    run = run_cli("check", "--config", str(path), env={"BAD": f"slakk://{TOKEN}/x"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "profiles[0].notify[0]: Apprise cannot use this slakk:// URL" in run.stderr
    assert "profiles[0].notify[1]: is not an Apprise URL" in run.stderr
    assert TOKEN not in run.stderr
    unset = run_cli("run", "--config", str(path))
    assert "environment variable BAD is not set" in unset.stderr


def readme_services() -> list[tuple[str, str]]:
    """The README's list of chat services, as (name, scheme), from its "Slack (`slack://`), Discord ..." sentence."""
    section = (ROOT / "README.md").read_text().split("### Chat and push")[1].split("\n### ")[0]
    listing = next(s for s in re.split(r"(?<=\.)\s+", " ".join(section.split())) if "Slack" in s)
    services = re.split(r",\s+(?:and\s+)?|\s+and\s+", listing.rpartition("one line: ")[2].rstrip("."))
    named = [re.fullmatch(r"(.+) \(`([a-z]+)://`\)", service) for service in services]
    assert len(services) >= 10 and all(named), f"each service with its scheme, as Name (`scheme://`): {listing}"
    return [(m[1], m[2]) for m in named if m]


def _workflow_text(request: dict[str, Any]) -> str:
    return next(b["text"] for b in request["body"]["attachments"][0]["content"]["body"] if b.get("id") == "body")


# Each service the README names: its URL (aimed at the loopback chat server, as its own host or, for the hosted
# services, through the proxy), the path of the request that carries the message, what of that request (as
# ChatServer keeps it) is the message as the
# service counts it, and the most it takes: Apprise's limit for the service (tests/fixtures/real/APPRISE.md), or for
# Matrix the spec's 65,536 bytes of a whole event.
PAYLOADS: dict[str, tuple[str, str, Callable[[dict[str, Any]], str | int], int]] = {
    "slack": (
        f"slack://T1JJ3T3L2/A1BRTD4JD/{TOKEN}/#papers",
        "/services/",
        lambda r: r["body"]["attachments"][0]["text"],
        35000,
    ),
    "discord": (
        "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
        "/api/webhooks/",
        lambda r: (
            r["body"]["embeds"][0]["title"] + r["body"]["embeds"][0]["description"]
        ),  # Discord's 2,000 hold the title too
        2000,
    ),
    "tgram": (f"tgram://{TELEGRAM}/12315544/", f"/bot{TELEGRAM}/sendMessage", lambda r: r["body"]["text"], 4096),
    "matrix": ("matrix://token@{host}/#papers", "/_matrix/client/v3/rooms/", lambda r: r["size"], 65536),
    "workflow": ("workflow://prod-00.westeurope.logic.azure.com:443/wf/sig", "/workflows/", _workflow_text, 1000),
    "mmost": ("mmost://{host}/" + TOKEN, MATTERMOST, lambda r: r["body"]["text"], 4000),
    "ntfy": ("ntfy://{host}/papers", "/", lambda r: r["body"]["message"], 7800),
    "gotify": ("gotify://{host}/AbCdEfGhIjKlMnO", "/message", lambda r: r["body"]["message"], 32768),
    "lark": (
        f"lark://{LARK}",
        "/open-apis/bot/v2/hook/",
        lambda r: r["body"]["card"]["elements"][0]["text"]["content"],
        19985,
    ),
    "feishu": (
        f"feishu://{LARK}",
        "/open-apis/bot/v2/hook/",
        lambda r: r["body"]["card"]["header"]["title"]["content"] + r["body"]["card"]["elements"][0]["text"]["content"],
        19985,
    ),
    "json": ("json://{host}/digest-hook", "/digest-hook", lambda r: r["body"]["message"], 32768),
}


def test_every_service_the_readme_names_has_its_payload_checked():
    assert sorted(scheme for _, scheme in readme_services()) == sorted(PAYLOADS)


@pytest.mark.parametrize("scheme", sorted(PAYLOADS))
def test_each_service_gets_at_most_what_it_takes_in_what_apprise_really_sends(scheme, services, monkeypatch):
    """A day of 137 relevant papers, far more than any service takes, sent through Apprise to the service's own
    URL: the message as it arrives (Telegram's own Markdown, the title in front as `# title`, Discord's embed,
    Matrix's event with its HTML) is within the service's limit, and cut near it, with a link to the rest."""
    import asyncio

    from digest.channels.notify import NotifyChannel, destination_name
    from digest.models import Delivery

    host, server, environment = services
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    template, path, message_of, limit = PAYLOADS[scheme]
    url = template.format(host=host)
    papers = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    verdicts = {
        p.key: Verdict(paper_key=p.key, score=8, reason="Why: " + p.abstract, matched_interests=[]) for p in papers
    }
    digest = build_digest(
        Profile(name="me", interests="x"), dt.date(2026, 6, 30), ["cs.CL"], papers, verdicts, 0, Usage(), 0.0
    )
    name = destination_name(url)
    links = Links("https://digest.example.org", "s" * 32)
    channel = NotifyChannel({("me", name): url}, links, emailed=set(), secrets=[])
    subject = "arXiv digest - 30 Jun 2026 - 137 papers for you"
    delivery = Delivery(
        digest_id=1,
        profile="me",
        announced=digest.announced,
        recipient=name,
        message_id=None,
        message=b"",
        subject=subject,
        content=digest,
    )
    results: list[Any] = []
    asyncio.run(channel.deliver([delivery], lambda _, result: results.append(result), asyncio.Event()))
    assert [r.status for r in results] == ["sent"], results
    sent = [r for r in server.received if r["path"].startswith(path)]
    assert len(sent) == 1, "one message, not split"
    measured = message_of(sent[0])
    size = measured if isinstance(measured, int) else len(measured)
    assert size <= limit
    more = re.search(r"and (\d+) more: https://digest\.example\.org/a/me/", json.dumps(sent[0]["body"]))
    assert more is not None and int(more[1]) < 137
    if isinstance(measured, str):  # cut near the limit: less room left than two papers as long as the longest shown
        longest = max(len(block) for block in measured.split("\n\n") if "arxiv.org/abs/" in block)
        assert size + 2 * longest > limit, (size, longest)


def test_the_apprise_floor_is_a_release_digest_works_with():
    """apprise>=1.9 let pip install 1.13, whose notify() takes no timeout and returns a bool: every send crashed
    (tests/fixtures/real/APPRISE.md). The floor is the first release with the API digest uses; the lock's pin is
    what the tests run."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = next(Requirement(r) for r in project["project"]["dependencies"] if r.startswith("apprise"))
    assert "1.13.1" not in floor.specifier and "2.0.0" in floor.specifier
    locked = re.search(r"^apprise==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    assert locked is not None and locked[1] in floor.specifier
    assert importlib.metadata.version("apprise") == locked[1]


def test_every_service_the_readme_names_is_one_the_pinned_apprise_takes():
    """The README's list of services, each with its URL scheme: Apprise retired msteams:// (in 1.11), which the list
    promised as Microsoft Teams."""
    import apprise

    schemas = apprise.Apprise().details()["schemas"]
    taken = {p for s in schemas for p in (*(s["protocols"] or ()), *(s["secure_protocols"] or ()))}
    assert not [scheme for _, scheme in readme_services() if scheme not in taken]
