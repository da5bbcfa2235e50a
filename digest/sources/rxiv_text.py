"""Titles and abstracts as bioRxiv's and medRxiv's API writes them, made plain readable text.

The API flattens each paper's JATS XML into text, and what was markup survives as tokens (see
tests/fixtures/real/SOURCES.md for how often each occurs in real pages):

- `O_LI` ... `C_LI`: an item of a list ("HighlightsO_LISpeech-sound changes ...C_LIO_LI...");
- `O_SCPLOW` ... `C_SCPLOW`: small capitals ("AO_SCPLOWBSTRACTC_SCPLOW" is "ABSTRACT");
- `O_ST_ABS` ... `C_ST_ABS`: a subheading; `O_TEXTBOX` ... `C_TEXTBOX`: a box beside the text;
- symbols by name in braces (`{beta}`, `{+/-}`, `{middle dot}`) or as HTML entities in brackets (`[&ge;]`);
- the headings of a structured abstract glued to the first word of their paragraph ("BackgroundDrug",
  "Aim of the studyTo", "METHODSGermline", "Results3131 respondents");
- now and then real HTML tags (`<i>`, `<sub>`, `</p>`).

Only these are rewritten. Everything else is text and stays as written: "aged <65 years (p<0.05)" keeps its
signs, a set "{0,1}" its braces.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import NamedTuple

from digest.wording import UNSAFE_CHARACTERS

# Real markup: a tag whose name is HTML's, JATS's or MathML's, with attributes as HTML writes them. "<s>" is left
# alone: papers on language models write it as a token, and bioRxiv never as markup.
INLINE_TAGS = (
    r"a|abbr|b|big|bold|cite|code|dfn|em|font|i|inline-formula|italic|kbd|mark|monospace|named-content|sc|small"
    r"|span|strike|strong|styled-content|sub|sup|tt|u|underline|xref|ext-link|math|mml:[a-z]+"
)
BLOCK_TAGS = (
    r"blockquote|br|caption|dd|div|dl|dt|h[1-6]|hr|li|list|list-item|ol|p|sec|table|tbody|td|th|thead|title|tr|ul"
)
ATTRIBUTES = r"""(?:\s+[A-Za-z_:][-\w:.]*(?:\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'=<>`]+))?)*\s*/?"""
INLINE_TAG = re.compile(rf"</?(?:{INLINE_TAGS}){ATTRIBUTES}>", re.IGNORECASE)
BLOCK_TAG = re.compile(rf"</?(?:{BLOCK_TAGS}){ATTRIBUTES}>", re.IGNORECASE)

SMALL_CAPITALS = re.compile(r"O_SCPLOW(.*?)C_SCPLOW", re.DOTALL)
BRACKETED_ENTITY = re.compile(r"\[(&#?[A-Za-z0-9]{1,30};)\]")
NAMED_SYMBOL = re.compile(r"\{([A-Za-z][A-Za-z ]{0,40}|[-+/<>=~]{2,4})\}")
SYMBOLS = {
    "+/-": "\u00b1",
    "-/+": "\u2213",
    "<=": "\u2264",
    ">=": "\u2265",
    "approx": "\u2248",
    "degree": "\u00b0",
    "micro": "\u00b5",
    "times": "\u00d7",
}
# The structure the API flattened, and paragraphs (an empty line), as the pieces the text is cut into.
STRUCTURE = re.compile(r"(O_LI|C_LI|O_ST_ABS|C_ST_ABS|O_TEXTBOX|C_TEXTBOX|\n\s*\n)")

# The words the headings of structured abstracts are made of (IMRaD, CONSORT, JAMA's, The Lancet's "Research in
# context", bioRxiv's "Highlights"). A heading is made of these only, and holds at least one that can stand alone.
STANDALONE_HEADING_WORDS = """
abstract adds aim aims analyses analysis approach availability background backgrounds conclusion conclusions
contact context design discussion dissemination ethics evidence exposure exposures findings funding goal goals
highlights hypotheses hypothesis implementation implications importance information interpretation interventions
introduction known limitations meaning measurements measures method methodology methods motivation novelty
objective objectives outcomes participants points population presentation purpose question rationale
registration relevance result results review selection setting settings significance sources statement study
summary value
"""
OTHER_HEADING_WORDS = """
added all already and available author before case clinical data in is key lay main materials of paper patients
plain primary research secondary sentence subjects supplementary systematic the this trial what
"""
HEADINGS = frozenset(STANDALONE_HEADING_WORDS.split())
HEADING_PARTS = HEADINGS | frozenset(OTHER_HEADING_WORDS.split())
HEADING_WORD = re.compile(r"[A-Za-z]+")
HEADING_SEPARATORS = re.compile(r"^(?:[A-Za-z]+(?:, | and | & |/| |-))*[A-Za-z]+$")
# Where a glued heading can end: a letter followed by a capital ("dT" of BackgroundThe, "NW" of INTRODUCTIONWe,
# "GN" of FUNDINGNIH) or by a figure ("s3" of Results3131).
HEADING_END = re.compile(r"(?<=[A-Za-z])(?=[A-Z\d])")
LONGEST_HEADING = 60
SENTENCE_END = (".", "!", "?", ":", ";")


def plain_text(value: str) -> str:
    """A title, the authors, a subject: markup out, symbols as characters, on one line."""
    return " ".join(_inline(value).split())


def plain_abstract(value: str) -> str:
    """An abstract on one line, its structure kept in words: "Objectives: To ...", a list's items as sentences."""
    text = _inline(value)
    return " ".join(" ".join(_blocks(text)).split())


def _inline(value: str) -> str:
    """Tags, entities, small capitals and symbols; control characters out, before and after entities are read."""
    text = UNSAFE_CHARACTERS.sub("", value)
    text = BLOCK_TAG.sub("\n\n", INLINE_TAG.sub("", text))
    text = SMALL_CAPITALS.sub(lambda match: match[1].upper(), text)
    text = BRACKETED_ENTITY.sub(lambda match: html.unescape(match[1]), text)
    text = NAMED_SYMBOL.sub(lambda match: _symbol(match[1]) or match[0], text)
    return UNSAFE_CHARACTERS.sub("", html.unescape(text))


def _symbol(name: str) -> str | None:
    """The character a name in braces stands for ({beta}, {Delta}, {+/-}, {middle dot}), or None: then the braces
    were text."""
    if name in SYMBOLS:
        return SYMBOLS[name]
    case = "CAPITAL" if name[0].isupper() else "SMALL"
    for unicode_name in (f"GREEK {case} LETTER {name.upper()}", name.upper()):
        try:
            found = unicodedata.lookup(unicode_name)
        except KeyError:
            continue
        if not unicodedata.category(found).startswith("C"):
            return found
    return None


class Block(NamedTuple):
    kind: str  # "text", "heading" or "item"
    text: str


def _blocks(text: str) -> list[str]:
    """The text's paragraphs, subheadings and list items, each heading joined to what follows it."""
    blocks: list[Block] = []
    kind = "text"
    for piece in STRUCTURE.split(text):
        if piece in ("O_LI", "O_ST_ABS"):
            kind = "item" if piece == "O_LI" else "heading"
        elif piece in ("C_LI", "C_ST_ABS", "O_TEXTBOX", "C_TEXTBOX") or not piece.strip():
            kind = "text"
        elif kind == "text":
            blocks += _paragraph(piece.strip())
        else:
            blocks.append(Block(kind, piece.strip()))
    if blocks and blocks[0].kind == "heading" and blocks[0].text.lower() == "abstract":
        blocks = blocks[1:]  # the abstract's own title, as a few servers write it: the whole text is the abstract
    said: list[str] = []
    for number, block in enumerate(blocks):
        following = blocks[number + 1] if number + 1 < len(blocks) else None
        if block.kind == "heading":
            said.append(f"{block.text}:" if following is not None and following.kind != "heading" else f"{block.text}.")
        elif block.kind == "item":
            said.append(block.text if block.text.endswith(SENTENCE_END) else f"{block.text}.")
        else:
            said.append(block.text)
    return said


def _paragraph(text: str) -> list[Block]:
    """A paragraph, and the heading glued to its start if it has one: "BackgroundDrug ..." is a heading,
    "Background", and a paragraph, "Drug ..."; a paragraph that is a heading alone is that heading."""
    if _is_heading(text):
        return [Block("heading", text)]
    # The longest: RESULTSPrevalence is RESULTS and Prevalence, not RESULT and SPrevalence.
    ends = [
        end.start() for end in HEADING_END.finditer(text, 0, LONGEST_HEADING + 1) if _is_heading(text[: end.start()])
    ]
    if not ends:
        return [Block("text", text)]
    return [Block("heading", text[: ends[-1]]), Block("text", text[ends[-1] :])]


def _is_heading(text: str) -> bool:
    if len(text) > LONGEST_HEADING or not HEADING_SEPARATORS.match(text):
        return False
    words = [word.lower() for word in HEADING_WORD.findall(text)]
    return all(word in HEADING_PARTS for word in words) and any(word in HEADINGS for word in words)
