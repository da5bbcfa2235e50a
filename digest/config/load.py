"""Reading config.yaml: the YAML within bounds, `${VAR}` from the environment (secrets only for the commands that
use them), and every problem named with its line, its key and the fix."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from digest.config.schema import Config
from digest.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config.yaml")
ENV_CONFIG_PATH = "DIGEST_CONFIG"
ENV_DATA_DIR = "DIGEST_DATA"


def default_config_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(ENV_CONFIG_PATH) or DEFAULT_CONFIG_PATH)


# The parts of the config that hold secrets, by what uses them: a command needs the secrets of the parts it uses.
Section = Literal["llm", "embeddings", "smtp", "web", "notify", "zotero"]
SECTIONS: dict[Section, tuple[str, ...]] = {
    "llm": ("llm",),
    "embeddings": ("embeddings",),
    "smtp": ("email", "smtp"),
    "web": ("web",),
    "notify": ("profiles", "*", "notify"),  # every profile's notify URLs
    "zotero": ("profiles", "*", "library", "zotero"),  # every profile's Zotero key
}


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, *, uses: Collection[Section] = tuple(SECTIONS)
) -> Config:
    """Read, expand and validate config.yaml, or raise ConfigError listing every problem with its line.

    A secret (`api_key`, `password`, `secret`) from an unset variable is an error only in a section in `uses`:
    `digest status` needs no API key. Elsewhere it is left empty.
    """
    environ = os.environ if environ is None else environ
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            shown,
            [
                "the file does not exist: copy the example config.yaml from the repository, "
                f"or point --config or ${ENV_CONFIG_PATH} at yours"
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(shown, [f"cannot be read: {error}"]) from None

    if len(text) > MAX_CONFIG_CHARACTERS:
        raise ConfigError(shown, [f"the file has {len(text):,} characters; a config is a few thousand"])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if not _small_enough(root):
            raise ConfigError(
                shown,
                [
                    f"the file expands to more than {MAX_CONFIG_VALUES:,} values (aliases of aliases?); "
                    "a config is a few hundred"
                ],
            )
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark, error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        started = f" ({error.context} at line {context.line + 1})" if error.context and context is not None else ""
        raise ConfigError(shown, [f"{where}: YAML syntax error: {error.problem}{started}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(shown, [f"YAML syntax error: {error}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(shown, ["the file should be a mapping of sections (arxiv:, llm:, profiles:, ...)"])

    lines = _line_numbers(root)
    if isinstance(data.get("llm"), dict):
        data["llm"].setdefault("api_key", "${OPENAI_API_KEY}")
    data, missing = _expand_env(data, environ, ())
    missing = [(loc, name) for loc, name in missing if not _unused_secret(loc, uses)]
    problems = [
        f"{_where(loc, lines)}: environment variable {name} is not set; export it, or put it in the "
        "environment file your container or service reads"
        for loc, name in missing
    ]
    try:
        # In a container the config is mounted read-only; DIGEST_DATA points relative paths at the data volume.
        base_dir = Path(environ[ENV_DATA_DIR]) if environ.get(ENV_DATA_DIR) else path.resolve().parent
        config = Config.model_validate(data, context={"base_dir": base_dir, "uses": uses})
    except ValidationError as error:
        problems += [_describe(e, lines) for e in error.errors() if not _is_missing_env(e["loc"], missing)]
    if problems:
        raise ConfigError(shown, problems)
    return config


MAX_CONFIG_CHARACTERS = 1_000_000
MAX_CONFIG_VALUES = 20_000


def _small_enough(root: yaml.Node | None) -> bool:
    """Whether the document, with its aliases expanded, stays small: every later walk (line numbers, ${VAR},
    validation) expands them, and a few nested aliases make billions of values."""
    stack, seen = [root], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            return False
        if isinstance(node, yaml.MappingNode):
            stack += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return True


Location = tuple[str | int, ...]


def _line_numbers(node: yaml.Node | None, loc: Location = ()) -> dict[Location, int]:
    """Map every key path in the YAML document to its 1-based line, so errors can point at the line."""
    if node is None:
        return {}
    lines: dict[Location, int] = {loc: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, str(key_node.value))
            lines.update(_line_numbers(value_node, child))
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*loc, index)))
    return lines


SECRET_KEYS = frozenset({"api_key", "password", "secret"})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, environ: Mapping[str, str], loc: Location) -> tuple[Any, list[tuple[Location, str]]]:
    """Replace ${VAR} in every string with the environment's value; collect the variables that are not set."""
    missing: list[tuple[Location, str]] = []
    if isinstance(value, str):
        names = ENV_REFERENCE.findall(value)
        missing = [(loc, n) for n in names if n not in environ or environ[n] == ""]
        return ENV_REFERENCE.sub(lambda m: environ.get(m.group(1), ""), value), missing
    if isinstance(value, dict):
        expanded = {}
        for key, item in value.items():
            expanded[key], found = _expand_env(item, environ, (*loc, str(key)))
            missing += found
        return expanded, missing
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            expanded_item, found = _expand_env(item, environ, (*loc, index))
            items.append(expanded_item)
            missing += found
        return items, missing
    return value, missing


def _unused_secret(loc: Location, uses: Collection[Section]) -> bool:
    secret = str(loc[-1]) in SECRET_KEYS or _is_notify_url(loc)
    return secret and not any(_within(loc, SECTIONS[s]) for s in uses)


def _within(loc: Location, section: tuple[str, ...]) -> bool:
    return len(loc) >= len(section) and all(part in ("*", found) for part, found in zip(section, loc, strict=False))


def _is_notify_url(loc: Location) -> bool:
    """A notify URL is a secret as a whole: it carries the service's token."""
    return _within(loc, SECTIONS["notify"])


def _is_missing_env(loc: Location, missing: list[tuple[Location, str]]) -> bool:
    return any(tuple(loc[: len(m)]) == m for m, _ in missing)


def _key_path(loc: Location) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _where(loc: Location, lines: dict[Location, int]) -> str:
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in lines:
            return f"line {lines[loc[:depth]]}: {_key_path(loc)}"
    return _key_path(loc)


def _model_at(loc: Location) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc`, to suggest its keys."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        model = _nested_model(field.annotation)
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


MODEL_NAMES = {"SMTPConfig", "Prices", "WebConfig", "LibraryConfig", "ZoteroConfig"}


def _describe(error: Any, lines: dict[Location, int]) -> str:
    # Pydantic puts the model name of a `X | None` field into the location; it means nothing to a user.
    loc: Location = tuple(p for p in error["loc"] if p not in MODEL_NAMES)
    where = _where(loc, lines)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = [f.alias or name for name, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        suggestion = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(known)}"
        return f"{where}: unknown key; {suggestion}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    secret = bool(set(map(str, loc)) & SECRET_KEYS) or _is_notify_url(loc)
    if kind not in {"value_error", "assertion_error"} and not secret and not isinstance(value, dict | list):
        message += f" (found {value!r})"
    fix = TYPE_FIXES.get(kind)
    return f"{where}: {message}" + (f"; {fix}" if fix else "")


# What to write instead, for pydantic's words about a value of the wrong kind.
TYPE_FIXES = {
    "int_parsing": "write a whole number, like 6",
    "int_type": "write a whole number, like 6",
    "int_from_float": "write a whole number, like 6",
    "float_parsing": "write a number, like 2.5",
    "float_type": "write a number, like 2.5",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write text; put it in quotes if it looks like a number, a date or true/false",
    "list_type": "write a list: [a, b] on one line, or one '- item' a line below the key",
    "dict_type": "write a section: its keys indented on the lines below",
    "model_type": "write a section: its keys indented on the lines below",
    "model_attributes_type": "write a section: its keys indented on the lines below",
}
