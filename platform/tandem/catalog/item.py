"""The catalog item: schema and the normalisation applied to every item at ingest."""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_ITEM_ID_LEN = 128
MAX_VERSION = 2**63 - 1
"""Largest item version: the catalog store keeps versions in SQLite's signed 64-bit INTEGER."""
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_item_id(value: Any) -> Any:
    """The shared ``item_id`` check: ints become strings, strings are stripped and must hold no
    control characters. Anything else is returned unchanged for the field's type check."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        value = value.strip()
        if _CONTROL.search(value):
            raise ValueError("`item_id` must not contain control characters")
    return value


def _encodable(value: str, field: str) -> str:
    # JSON's \u escapes can carry lone surrogates, which no UTF-8 store or index can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"`{field}` holds a lone surrogate (not valid Unicode text)") from None
    return value


def normalize_text(text: str) -> str:
    """Unescape HTML entities (twice, for ``&amp;amp;``), NFC-normalise and fold whitespace."""
    text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    return _WS.sub(" ", text).strip()


class Item(BaseModel):
    """One product. Text fields are normalised on construction (see :func:`normalize_text`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str = Field(min_length=1, max_length=MAX_ITEM_ID_LEN)
    """Stable identifier, at most 128 characters, no control characters."""
    title: str = Field(min_length=1)
    """Product title; required and non-empty after normalisation."""
    description: str | None = None
    """Free-text description."""
    brand: str | None = None
    """Brand name."""
    category: list[str] = Field(default_factory=list)
    """Category path from the root, e.g. ``["Tools", "Power Tools", "Drills"]``."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """Structured attributes, name → value."""
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Price in the catalog's currency, finite and >= 0."""
    version: int = Field(default=0, ge=0, le=MAX_VERSION)
    """Monotonic version in ``0..2**63-1``; a stream event with an older version than the stored one
    is ignored."""

    @field_validator("item_id", mode="before")
    @classmethod
    def _check_item_id(cls, value: Any) -> Any:
        return check_item_id(value)

    @field_validator("item_id", "title", "description", "brand", "category", "attributes", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            _encodable(value, info.field_name or "")
        elif isinstance(value, list):
            for part in value:
                _encodable(part, info.field_name or "")
        elif isinstance(value, dict):
            for k, v in value.items():
                _encodable(k, info.field_name or "")
                _encodable(v, info.field_name or "")
        return value

    @field_validator("title", "description", "brand", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = normalize_text(value)
        return value

    @field_validator("description", "brand", mode="after")
    @classmethod
    def _empty_to_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("category", mode="before")
    @classmethod
    def _split_category(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [p for p in re.split(r"\s*[>/|]\s*", value) if p.strip()]
        if isinstance(value, list):
            value = [normalize_text(str(p)) for p in value if str(p).strip()]
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _normalise_attributes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {normalize_text(str(k)): normalize_text(str(v)) for k, v in value.items()}
        return value

    def text(self) -> str:
        """All searchable text in one string: title, brand, category, attributes, description."""
        parts = [self.title]
        if self.brand:
            parts.append(self.brand)
        parts.extend(self.category)
        parts.extend(f"{k} {v}" for k, v in self.attributes.items())
        if self.description:
            parts.append(self.description)
        return " ".join(parts)
