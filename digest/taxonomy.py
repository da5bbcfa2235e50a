"""The categories digest knows: arXiv's archives and how their subject classes are spelt, and the subjects of
bioRxiv and medRxiv, as their API spells a paper's `category` once normalised: lower case, words
apart (no hyphens, underscores or slashes), without the website's parenthetical ("Infectious Diseases (except
HIV/AIDS)" is `infectious diseases` in the API). Plain data: the config checks names against it, and the sources
normalise what the API sends the same way."""

from __future__ import annotations

import difflib
import re

BIORXIV_SUBJECTS = (
    "animal behavior and cognition",
    "biochemistry",
    "bioengineering",
    "bioinformatics",
    "biophysics",
    "cancer biology",
    "cell biology",
    "clinical trials",
    "developmental biology",
    "ecology",
    "epidemiology",
    "evolutionary biology",
    "genetics",
    "genomics",
    "immunology",
    "microbiology",
    "molecular biology",
    "neuroscience",
    "paleontology",
    "pathology",
    "pharmacology and toxicology",
    "physiology",
    "plant biology",
    "scientific communication and education",
    "synthetic biology",
    "systems biology",
    "zoology",
)

MEDRXIV_SUBJECTS = (
    "addiction medicine",
    "allergy and immunology",
    "anesthesia",
    "cardiovascular medicine",
    "dentistry and oral medicine",
    "dermatology",
    "emergency medicine",
    "endocrinology",
    "epidemiology",
    "forensic medicine",
    "gastroenterology",
    "genetic and genomic medicine",
    "geriatric medicine",
    "health economics",
    "health informatics",
    "health policy",
    "health systems and quality improvement",
    "hematology",
    "hiv aids",
    "infectious diseases",
    "intensive care and critical care medicine",
    "medical education",
    "medical ethics",
    "nephrology",
    "neurology",
    "nursing",
    "nutrition",
    "obstetrics and gynecology",
    "occupational and environmental health",
    "oncology",
    "ophthalmology",
    "orthopedics",
    "otolaryngology",
    "pain medicine",
    "palliative medicine",
    "pathology",
    "pediatrics",
    "pharmacology and therapeutics",
    "primary care research",
    "psychiatry and clinical psychology",
    "public and global health",
    "radiology and imaging",
    "rehabilitation medicine and physical therapy",
    "respiratory medicine",
    "rheumatology",
    "sexual and reproductive health",
    "sports medicine",
    "surgery",
    "toxicology",
    "transplantation",
    "urology",
)

_PARENTHETICAL = re.compile(r"\([^)]*\)")
_SEPARATORS = re.compile(r"[\s\-_/]+")


def normalise_subject(name: str) -> str:
    """`Cell-Biology`, `cell_biology`, `Cell Biology` -> `cell biology`; `HIV/AIDS` -> `hiv aids`."""
    return _SEPARATORS.sub(" ", _PARENTHETICAL.sub(" ", name)).strip().lower()


# arXiv's archives; a category is an archive, optionally followed by a subject class (cs.CL, astro-ph.GA).
ARCHIVES = frozenset(
    [
        "astro-ph",
        "cond-mat",
        "cs",
        "econ",
        "eess",
        "gr-qc",
        "hep-ex",
        "hep-lat",
        "hep-ph",
        "hep-th",
        "math",
        "math-ph",
        "nlin",
        "nucl-ex",
        "nucl-th",
        "physics",
        "q-bio",
        "q-fin",
        "quant-ph",
        "stat",
    ]
)
# Archives whose subject classes are two capital letters (cs.CL, math.AP); the rest use lower-case words.
UPPERCASE_SUBJECT_ARCHIVES = frozenset({"cs", "econ", "eess", "math", "q-bio", "q-fin", "stat"})


def is_arxiv_category(category: str) -> bool:
    """An arXiv category (cs.CL, math, hep-th), not a bioRxiv or medRxiv subject (neuroscience)."""
    return category.partition(".")[0] in ARCHIVES and normalise_subject(category) not in (
        BIORXIV_SUBJECTS + MEDRXIV_SUBJECTS
    )


def check_arxiv_category(category: str) -> str:
    archive, _, subject = category.partition(".")
    if archive not in ARCHIVES:
        close = difflib.get_close_matches(archive.lower(), ARCHIVES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}{'.' + subject if subject else ''}?)" if close else ""
        raise ValueError(f"'{category}' is not an arXiv category{hint}")
    if not subject:
        return category
    if archive in UPPERCASE_SUBJECT_ARCHIVES:
        if not re.fullmatch(r"[A-Za-z]{2}", subject):
            raise ValueError(
                f"'{category}' is not an arXiv category: {archive} subjects are two letters, like {archive}.LG"
            )
        if subject != subject.upper():
            raise ValueError(f"'{category}' is not an arXiv category (did you mean {archive}.{subject.upper()}?)")
    elif not re.fullmatch(r"[a-z]+(-[a-z]+)*", subject):
        raise ValueError(
            f"'{category}' is not an arXiv category: {archive} subjects are lower-case, like physics.optics"
        )
    return category
