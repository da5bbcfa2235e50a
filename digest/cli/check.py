"""`digest check`: reach the feed, the LLM server, the readers' Zotero libraries and the delivery channels,
classifying, reading and sending nothing, and say what earlier runs learned of the LLM server and what each Zotero
key may do. Notify URLs are parsed by Apprise, not sent to."""

from __future__ import annotations

import openai
from pydantic import BaseModel

from digest.channels import channel as channel_of
from digest.channels import configured_channel
from digest.config import Config, Profile, ZoteroConfig
from digest.errors import DigestError, LibraryError
from digest.llm.facts import is_local, load_facts
from digest.llm.requests import key_refused, openai_client
from digest.sources import configured_sources
from digest.state.store import Store
from digest.taste.zotero_api import KEY_INFO, KEYS_SETTINGS, Budget, KeyInfo, ZoteroAPI


class CheckResult(BaseModel):
    what: str
    ok: bool
    detail: str


async def check(config: Config) -> list[CheckResult]:
    """Reach the feed, the LLM server and the delivery channel without classifying or sending anything."""
    results: list[CheckResult] = []
    for source in configured_sources(config):
        try:
            results.append(CheckResult(what=source.service, ok=True, detail=await source.check()))
        except DigestError as error:
            results.append(CheckResult(what=source.service, ok=False, detail=str(error)))
    results.append(await _check_llm(config))
    for profile in config.profiles:
        if profile.library is not None and profile.library.zotero is not None:
            results.append(await _check_zotero(profile, profile.library.zotero))
        if profile.library is not None and profile.library.file is not None:
            found = profile.library.file.is_file()
            said = "is there; it is re-read at the start of a run when it changes" if found else "does not exist"
            results.append(
                CheckResult(what=f"library file ({profile.name})", ok=found, detail=f"{profile.library.file} {said}")
            )
    email = configured_channel(config)
    notifies = any(p.notify for p in config.profiles)
    emails = any(p.email or not p.notify for p in config.profiles)
    for channel in ([email] if emails else []) + ([channel_of("notify", config)] if notifies else []):
        try:
            results.append(CheckResult(what=f"delivery ({channel.kind})", ok=True, detail=await channel.check()))
        except DigestError as error:
            results.append(CheckResult(what=f"delivery ({channel.kind})", ok=False, detail=str(error)))
    return results


async def _check_llm(config: Config) -> CheckResult:
    client = openai_client(config.llm, timeout=10)
    try:
        listed = [(m.id, m.owned_by) async for m in client.models.list()]
    except openai.AuthenticationError:
        return CheckResult(what="LLM server", ok=False, detail=f"{config.llm.base_url}: {key_refused(0, '').message}")
    except openai.APIStatusError as error:
        return CheckResult(
            what="LLM server",
            ok=True,
            detail=f"{config.llm.base_url} answered /models with HTTP "
            f"{error.status_code}; some servers do not list models, so this may be fine",
        )
    except openai.APIConnectionError as error:
        return CheckResult(what="LLM server", ok=False, detail=f"cannot reach {config.llm.base_url}: {error}")
    finally:
        await client.close()
    models = [name for name, _ in listed]
    learned = _learned(config)
    if config.llm.model in models:
        return CheckResult(
            what="LLM server", ok=True, detail=f"{config.llm.base_url} serves '{config.llm.model}'{learned}"
        )
    owners = [owned_by for _, owned_by in listed]
    if len(models) == 1 and (owners[0] == "llamacpp" or is_local(config.llm.base_url)):
        # llama-server lists its one model under the -m path as typed (or --alias) and answers any name with it.
        return CheckResult(
            what="LLM server",
            ok=True,
            detail=f"{config.llm.base_url} serves one model, '{models[0]}', and answers any model name with it "
            f"(start llama-server with --alias {config.llm.model} to list it under the name in llm.model){learned}",
        )
    shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
    return CheckResult(
        what="LLM server",
        ok=False,
        detail=f"{config.llm.base_url} does not list model '{config.llm.model}' (it has: {shown or 'none'})",
    )


async def _check_zotero(profile: Profile, zotero: ZoteroConfig) -> CheckResult:
    """What the key may do (`/keys/current`), or, with no key, whether the library answers at all."""
    what = f"Zotero library ({profile.name})"
    try:
        async with ZoteroAPI(zotero, Budget(requests=3, seconds=30)) as api:
            if zotero.api_key is None:
                listing = f"{zotero.path}/items/top"
                answer = await api.get(listing, {"limit": "1", "format": "versions"}, what="a listing of one item")
                version = api.version_of(answer, "a listing of one item")
                return CheckResult(
                    what=what, ok=True, detail=f"{zotero.label} answers, at version {version}; read only, with no key"
                )
            key = api.parsed(await api.get("/keys/current", {}, what="what the key may do"), KEY_INFO, "the key")
    except LibraryError as error:
        return CheckResult(what=what, ok=False, detail=f"{zotero.label}: {error}")
    return _key_check(what, zotero, key)


def _key_check(what: str, zotero: ZoteroConfig, key: KeyInfo) -> CheckResult:
    if zotero.group_id is None:
        if key.userID != zotero.user_id:
            return CheckResult(
                what=what,
                ok=False,
                detail=f"the key is user {key.userID}'s, and library.zotero.user_id says {zotero.user_id}\n  fix: "
                f"set user_id to {key.userID}, or give that user's key",
            )
        access = key.access.user
    else:
        access = key.access.groups.get(str(zotero.group_id)) or key.access.groups.get("all") or {}
    may_read, may_write = access.get("library", False), access.get("write", False)
    said = (
        f"the key (user {key.userID}) may {'read' if may_read else 'not read'} {zotero.label}, and "
        f"{'write to it' if may_write else 'not write to it'}"
    )
    if not may_read:
        return CheckResult(what=what, ok=False, detail=f"{said}\n  fix: let it read the library at {KEYS_SETTINGS}")
    if zotero.save_to is not None and not may_write:
        return CheckResult(
            what=what,
            ok=False,
            detail=f"{said}: Save to Zotero needs write access\n  fix: allow the key to write at {KEYS_SETTINGS}, or "
            "leave save_to out",
        )
    saves = f"; Save to Zotero puts papers in '{zotero.save_to}'" if zotero.save_to is not None else ""
    return CheckResult(what=what, ok=True, detail=said + saves)


def _learned(config: Config) -> str:
    """What earlier runs learned of this server and model, for `digest check`."""
    if not config.state.exists():
        return ""
    with Store(config.state) as store:
        facts = load_facts(store, config.llm)
    said = []
    if facts.structured_output is not None:
        said.append(
            {
                "json_schema": "structured output with a JSON schema",
                "json_object": "JSON mode only (no JSON schema)",
                "instructions": "no structured output (the answer is asked for in the instructions, and checked)",
            }[facts.structured_output]
        )
    if facts.refused:
        said.append(f"without {', '.join(facts.refused)} (refused)")
    if facts.answers_per_second:
        said.append(f"{facts.answers_per_second:.2g} answers a second in the last run")
    if facts.concurrency:
        said.append(f"{facts.concurrency} requests at once")
    if facts.batch_api is False:
        said.append("no Batch API")
    return f"; learned in earlier runs: {', '.join(said)}" if said else ""
