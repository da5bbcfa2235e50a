"""The subjects of bioRxiv and medRxiv, as their API spells a paper's `category` once normalised: lower case, words
apart (no hyphens, underscores or slashes), without the website's parenthetical ("Infectious Diseases (except
HIV/AIDS)" is `infectious diseases` in the API). Plain data: the config checks names against it, and the sources
normalise what the API sends the same way."""

from __future__ import annotations

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
