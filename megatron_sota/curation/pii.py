"""Replaces e-mail addresses, IP addresses, phone numbers and Luhn-valid card numbers with fixed placeholders.

Pure regex work on the text; it must not drop documents or guess at names, and it must not touch dates,
times, version numbers or code slices.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.utils.typeshelper import StatHints

EMAIL_PLACEHOLDER = "<EMAIL>"
IP_ADDRESS_PLACEHOLDER = "<IP_ADDRESS>"
PHONE_PLACEHOLDER = "<PHONE>"
CARD_NUMBER_PLACEHOLDER = "<CARD_NUMBER>"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)

# Up to 8 groups of >= 3 digits joined by one separator, used consistently: "4111 1111 1111 1111", "3782-822463-10005",
# "4111111111111111". Lists like "1 2 3 4 ..." never qualify, and a "." neighbour means a decimal or version.
_CARD_CANDIDATE = re.compile(r"(?<![\w.+-])\d{3,19}(?:(?P<sep>[ -])\d{3,19}(?:(?P=sep)\d{3,19}){0,6})?(?![\w-]|\.\d)")
_CARD_MIN_DIGITS, _CARD_MAX_DIGITS = 13, 19

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"
# The usual enumeration of where "::" may stand (RFC 4291 section 2.2), full form first.
_IPV6 = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:[0-9A-Fa-f]{{0,4}}:){{2,6}}{_IPV4}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?:(?::{_H}){{1,7}}|:)",
    ]
)
# IPv4 may be followed by ":port"; an IPv6 candidate may not touch another ":" (it would be a fragment).
_IP = re.compile(rf"(?<![\w:.])(?:{_IPV6})(?![\w:]|\.\d)|(?<![\w.]){_IPV4}(?![\w]|\.\d)")

# North American numbers need separators (a bare 10-digit run is more often an id or a Unix time);
# international ones need the leading "+", which dates, years and versions never have, and a space, dash or
# parenthesis ("+4294967296" and "+3.140000" are signed numbers in code, not phones).
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+[1-9]\d{0,2}(?:[ -]?\(\d{1,4}\)|[ -]?\d{1,4}){1,7}"
    r"|(?:1[ .-])?(?:\([2-9]\d\d\)[ ]?|[2-9]\d\d[ .-])\d{3}[ .-]\d{4}"
    r")(?![\w-]|\.\d)"
)
_PHONE_MIN_DIGITS, _PHONE_MAX_DIGITS = 7, 15


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 checksum every payment card number carries (ISO/IEC 7812)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_in_groups(groups: list[str]) -> tuple[int, int] | None:
    """The longest run of consecutive groups (leftmost first) that is a Luhn-valid 13-19 digit number."""
    for size in range(len(groups), 0, -1):
        for start in range(len(groups) - size + 1):
            digits = "".join(groups[start : start + size])
            # No issuer number starts with 0 (ISO/IEC 7812), and all-zero ids (UUIDs) pass Luhn trivially.
            if _CARD_MIN_DIGITS <= len(digits) <= _CARD_MAX_DIGITS and digits[0] != "0" and luhn_valid(digits):
                return start, start + size
    return None


def _redact_card(match: re.Match) -> str:
    # A card followed by more digit groups (a CVV, an expiry) still gets found inside the candidate.
    sep = match.group("sep") or " "
    groups = match.group(0).split(sep)
    found = _card_in_groups(groups)
    if found is None:
        return match.group(0)
    start, end = found
    return sep.join(groups[:start] + [CARD_NUMBER_PLACEHOLDER] + groups[end:])


def _redact_ip(match: re.Match) -> str:
    text = match.group(0)
    if ":" not in text or "." in text or "::" not in text:
        return IP_ADDRESS_PLACEHOLDER
    # A compressed IPv6 needs one full 4-digit group or three groups: "fe80::1" and "2001:db8::1" are
    # addresses, while the slice "1::2", "::-1", "abc::def" (C++ scope) and loopback "::1" are not personal.
    groups = [g for g in text.split(":") if g]
    if any(len(g) == 4 for g in groups) or len(groups) >= 3:
        return IP_ADDRESS_PLACEHOLDER
    return text


def _redact_phone(match: re.Match) -> str:
    text = match.group(0)
    if text.startswith("+") and not any(c in text for c in " -("):
        return text
    digits = sum(c.isdigit() for c in text)
    return PHONE_PLACEHOLDER if _PHONE_MIN_DIGITS <= digits <= _PHONE_MAX_DIGITS else text


def _substitute(
    pattern: re.Pattern, replace: Callable[[re.Match], str], placeholder: str, text: str
) -> tuple[str, int]:
    """pattern.sub with replace, counting the placeholders that replace actually inserted."""
    before = text.count(placeholder)
    text = pattern.sub(replace, text)
    return text, text.count(placeholder) - before


def redact(
    text: str,
    emails: bool = True,
    ip_addresses: bool = True,
    phone_numbers: bool = True,
    card_numbers: bool = True,
) -> tuple[str, dict[str, int]]:
    """Redacted text and, per PII type with at least one hit, how many were replaced.

    Order matters: e-mails first (their domains contain dots and digits), cards before phones (a grouped card
    number looks like several phone numbers), IP addresses before phones.
    """
    steps = [
        ("email", emails, _EMAIL, lambda m: EMAIL_PLACEHOLDER, EMAIL_PLACEHOLDER),
        ("card_number", card_numbers, _CARD_CANDIDATE, _redact_card, CARD_NUMBER_PLACEHOLDER),
        ("ip_address", ip_addresses, _IP, _redact_ip, IP_ADDRESS_PLACEHOLDER),
        ("phone", phone_numbers, _PHONE, _redact_phone, PHONE_PLACEHOLDER),
    ]
    counts: dict[str, int] = {}
    for kind, enabled, pattern, replace, placeholder in steps:
        if enabled:
            text, n = _substitute(pattern, replace, placeholder, text)
            if n:
                counts[kind] = n
    return text, counts


class PiiRedactor(BaseFormatter):
    """Redacts PII in doc.text; records per-type counts in doc.metadata["pii_redacted"] and stats pii_<type>."""

    name = "pii"

    def __init__(
        self, emails: bool = True, ip_addresses: bool = True, phone_numbers: bool = True, card_numbers: bool = True
    ):
        super().__init__()
        self.emails = emails
        self.ip_addresses = ip_addresses
        self.phone_numbers = phone_numbers
        self.card_numbers = card_numbers

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        return redact(text, self.emails, self.ip_addresses, self.phone_numbers, self.card_numbers)

    def format(self, text: str) -> str:
        return self.redact(text)[0]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                doc.text, counts = self.redact(doc.text)
            for kind, n in counts.items():
                self.stat_update(f"pii_{kind}", value=n)
            if counts:
                doc.metadata["pii_redacted"] = counts
            yield doc
