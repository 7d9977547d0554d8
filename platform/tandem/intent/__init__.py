"""Query intent decomposition: typed sub-intents (product type, brand, colour, material, finish,
size, use, audience, price) from catalog-mined vocabularies, a distantly supervised tagger and
rules for prices and sizes; each sub-intent becomes a sub-query or a filter."""

from tandem.intent.base import FILTER_INTENT, Intent, IntentDecomposer, WholeQuery
from tandem.intent.decomposer import CatalogIntentDecomposer, ParsedQuery, Span, load_decomposer
from tandem.intent.filters import IntentFilter
from tandem.intent.mining import Vocabulary, mine_vocabulary
from tandem.intent.rules import PriceConstraint, find_sizes, parse_price
from tandem.intent.tagger import Tagger

__all__ = ["FILTER_INTENT", "CatalogIntentDecomposer", "Intent", "IntentDecomposer", "IntentFilter", "ParsedQuery",
           "PriceConstraint", "Span", "Tagger", "Vocabulary", "WholeQuery", "find_sizes", "load_decomposer",
           "mine_vocabulary", "parse_price"]
