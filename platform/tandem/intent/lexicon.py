"""Seed lexicons and the shared tokenizer of intent decomposition.

The seeds are small and hand-written on purpose: they name the *classes* (what a colour or a
material is); the catalog-specific vocabulary is mined from titles by :mod:`tandem.intent.mining`
and the tagger generalises from both.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

#: Sub-intent labels the tagger predicts (``O`` = none). Sizes and prices come from rules.
BRAND, TYPE, COLOR, MATERIAL, FINISH, USE, AUDIENCE, SIZE, PRICE, OTHER = (
    "brand", "product_type", "color", "material", "finish", "use", "audience", "size", "price", "O")
TAGGED_LABELS = (BRAND, TYPE, COLOR, MATERIAL, FINISH, USE, AUDIENCE)

SEED_COLORS = frozenset("""white black red blue green yellow orange purple pink brown gray grey silver gold beige
ivory tan almond bisque cream navy teal aqua turquoise charcoal espresso mahogany cherry walnut oak maple natural
clear burgundy khaki sand taupe copper bronze biscuit linen slate graphite mocha chestnut cedar driftwood
multi-color""".split())
SEED_MATERIALS = frozenset("""steel stainless aluminum aluminium brass copper iron wood wooden hardwood plywood mdf
vinyl pvc plastic resin fiberglass glass ceramic porcelain stone granite marble quartz concrete cement brick
rubber nylon polyester cotton wool leather bamboo teak cedar pine acrylic polycarbonate polyethylene composite
wicker metal zinc titanium carbide cast galvanized travertine slate laminate cork foam jute sisal asphalt gypsum
drywall""".split())
SEED_FINISHES = frozenset("""brushed polished satin matte matt gloss glossy semi-gloss eggshell flat chrome nickel
oil-rubbed rubbed antique antiqued distressed textured hammered powder-coated lacquered weathered
unfinished primed painted stained enameled""".split())
SEED_USES = frozenset("""outdoor indoor kitchen bathroom bath shower garden patio garage deck pool lawn yard
basement attic closet bedroom laundry office porch fence roof roofing exterior interior landscape landscaping
camping workshop commercial residential vanity pantry driveway outdoors""".split())
SEED_AUDIENCES = frozenset("""kids kid children child baby toddler pet pets dog dogs cat cats men mens women womens
senior seniors handicap handicapped ada professional pro contractor beginner""".split())
#: Words asking for a low price relative to the catalog (see :mod:`tandem.intent.rules`).
CHEAP_WORDS = frozenset("cheap cheapest inexpensive affordable budget bargain low-cost discount".split())
STOPWORDS = frozenset("a an and the of for with in on to by at or from that like look looks".split())

_TOKEN = re.compile(r"\$|[<>]=?|[a-z0-9]+(?:[-/.'&][a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class Token:
    """A lowercase token and its character span in the normalised text."""

    text: str
    start: int
    end: int


def normalize(text: str) -> str:
    """Lowercase, HTML-unescaped, single-spaced (queries and titles go through the same path)."""
    return " ".join(html.unescape(text).lower().split())


def tokenize(text: str) -> list[Token]:
    """Tokens of :func:`normalize`d ``text`` with spans; fractions (``1/2``), hyphenated words
    (``strong-tie``), ``2x4`` and ``$``/``<`` stay single tokens."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def stem(word: str) -> str:
    """A light plural folding (``doors`` → ``door``, ``boxes`` → ``box``) so query and title
    forms meet in the vocabularies; anything smarter would need a lexicon we do not have."""
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
