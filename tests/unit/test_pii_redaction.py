"""Specification of PII redaction: what each placeholder replaces, and the look-alikes it must leave alone.

Test numbers are the issuers' published test cards and documentation address ranges (RFC 5737, RFC 3849).
"""

from __future__ import annotations

import os
import sysconfig

import dill
import pytest
from datatrove.data import Document

from megatron_sota.curation.pii import (
    CARD_NUMBER_PLACEHOLDER,
    EMAIL_PLACEHOLDER,
    IP_ADDRESS_PLACEHOLDER,
    PHONE_PLACEHOLDER,
    PiiRedactor,
    luhn_valid,
    redact,
)


def redacted(text: str) -> str:
    return redact(text)[0]


# --- e-mail -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["john.doe@example.com", "first.last+tag@mail.example.co.uk", "X_Y@sub-domain.org"])
def test_email_addresses_are_replaced(address):
    assert redact(f"Write to {address}, please.") == (f"Write to {EMAIL_PLACEHOLDER}, please.", {"email": 1})


def test_decorators_and_at_signs_without_a_domain_are_not_emails():
    text = "@property\ndef x(self): return a @ b  # matrix product; ping me @alice"
    assert redact(text) == (text, {})


# --- card numbers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "3782 822463 10005", "5555555555554444"],
)
def test_luhn_valid_card_numbers_are_replaced_in_any_grouping(card):
    assert redact(f"Paid with {card} today.") == (f"Paid with {CARD_NUMBER_PLACEHOLDER} today.", {"card_number": 1})


def test_luhn_invalid_card_is_kept():
    assert not luhn_valid("4111111111111112")
    text = "Order ref 4111 1111 1111 1112 and id 4111111111111112."
    assert redact(text) == (text, {})


def test_card_followed_by_a_security_code_is_still_found():
    assert redacted("Card: 4111 1111 1111 1111 123") == f"Card: {CARD_NUMBER_PLACEHOLDER} 123"


def test_too_short_or_too_long_digit_runs_are_not_cards():
    # 12 and 20 digits, each Luhn-valid.
    assert luhn_valid("411111111117") and luhn_valid("41111111111111111115")
    text = "ids 411111111117 and 41111111111111111115"
    assert redact(text) == (text, {})


def test_lists_of_small_numbers_and_all_zero_ids_are_not_cards():
    text = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; uuid 00000000-0000-0000-0000-000000000000"
    assert redact(text) == (text, {})


# --- IP addresses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["192.0.2.1", "10.0.0.255", "255.255.255.0", "198.51.100.7"])
def test_ipv4_addresses_are_replaced(address):
    assert redact(f"Host {address} is down.") == (f"Host {IP_ADDRESS_PLACEHOLDER} is down.", {"ip_address": 1})


def test_ipv4_with_port_and_ranges():
    assert redacted("http://192.0.2.1:8080/ and 10.0.0.1-10.0.0.9") == (
        f"http://{IP_ADDRESS_PLACEHOLDER}:8080/ and {IP_ADDRESS_PLACEHOLDER}-{IP_ADDRESS_PLACEHOLDER}"
    )


def test_out_of_range_octets_and_version_strings_are_not_ipv4():
    text = "Not 999.1.1.1, 256.1.1.1, version 1.2.3, Python 3.11.7 or the dotted 1.2.3.4.5."
    assert redact(text) == (text, {})


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8::8a2e:370:7334",
        "fe80::1",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8::",
        "::ffff:192.0.2.128",
    ],
)
def test_ipv6_full_and_compressed_forms_are_replaced(address):
    assert redact(f"Route via {address} now.") == (f"Route via {IP_ADDRESS_PLACEHOLDER} now.", {"ip_address": 1})


def test_bracketed_ipv6_with_port():
    assert redacted("http://[2001:db8::1]:8080/") == f"http://[{IP_ADDRESS_PLACEHOLDER}]:8080/"


def test_times_slices_and_scopes_are_not_ipv6():
    text = "At 12:30:45 run a[1::2], b[::-1], c[::2], d[10:20:2], std::vector and abc::def; MAC 00:1A:2B:3C:4D:5E."
    assert redact(text) == (text, {})


# --- phone numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "+1 555 123 4567",
        "1-800-555-0199",
        "+44 20 7946 0958",
        "+49 151 12345678",
        "+33 1 23 45 67 89",
        "+91-98765-43210",
    ],
)
def test_north_american_and_international_phones_are_replaced(number):
    assert redact(f"Call {number} today.") == (f"Call {PHONE_PLACEHOLDER} today.", {"phone": 1})


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 the release moved.",
        "Due 2024-01-15, see 2024-01-15T10:30:00Z and 15/01/2024.",
        "Requires version 3.11.7 or 10.0.19045.",
        "Unix time 1700000000 and id 5551234567.",
        "x = +4294967296 and y = +3.140000",
        "Local 555-1234 only.",
    ],
)
def test_years_dates_timestamps_versions_and_signed_numbers_are_not_phones(text):
    assert redact(text) == (text, {})


def test_cards_are_redacted_before_phones_see_their_digit_groups():
    assert redact("Card 4111 1111 1111 1111.") == (f"Card {CARD_NUMBER_PLACEHOLDER}.", {"card_number": 1})


# --- all together, options, the pipeline step ---------------------------------------------------------------

LETTER = (
    "Hi Ann, mail me at ann.smith@example.org or call +1 555 123 4567.\n"
    "The server 192.0.2.44 (and fe80::1ff:fe23:4567:890a) logged card 4111-1111-1111-1111.\n"
    "Python 3.11.7 was released on 2023-12-04."
)


def test_every_type_is_counted():
    text, counts = redact(LETTER)
    assert counts == {"email": 1, "phone": 1, "ip_address": 2, "card_number": 1}
    assert "Python 3.11.7 was released on 2023-12-04." in text
    for secret in ("ann.smith", "555 123", "192.0.2.44", "fe80", "4111"):
        assert secret not in text


def test_disabled_types_are_left_in_place():
    text, counts = redact(LETTER, emails=False, card_numbers=False)
    assert "ann.smith@example.org" in text and "4111-1111-1111-1111" in text
    assert counts == {"phone": 1, "ip_address": 2}


def test_placeholders_already_in_the_text_are_not_counted():
    assert redact(f"Earlier run wrote {EMAIL_PLACEHOLDER} here; new: bob@example.com")[1] == {"email": 1}


def test_step_records_metadata_and_stats_per_type():
    step = PiiRedactor()
    docs = [Document(text=LETTER, id="a"), Document(text="Nothing personal here.", id="b")]
    out = list(step.run(docs))
    assert [d.id for d in out] == ["a", "b"]
    assert out[0].metadata["pii_redacted"] == {"email": 1, "phone": 1, "ip_address": 2, "card_number": 1}
    assert "pii_redacted" not in out[1].metadata
    assert out[1].text == "Nothing personal here."
    assert step.stats["pii_ip_address"].total == 2
    assert step.stats["pii_email"].total == 1 and step.stats["pii_card_number"].total == 1
    assert step.stats["pii_phone"].total == 1


def test_step_options_follow_the_constructor():
    out = next(PiiRedactor(phone_numbers=False, ip_addresses=False).run([Document(text=LETTER, id="a")]))
    assert out.metadata["pii_redacted"] == {"email": 1, "card_number": 1}
    assert "+1 555 123 4567" in out.text and "192.0.2.44" in out.text


def test_step_survives_dill_after_use():
    step = PiiRedactor(emails=False)
    list(step.run([Document(text=LETTER, id="a")]))
    clone = dill.loads(dill.dumps(step))
    out = next(clone.run([Document(text=LETTER, id="b")]))
    assert out.metadata["pii_redacted"] == {"phone": 1, "ip_address": 2, "card_number": 1}


def test_python_source_is_left_nearly_untouched():
    with open(os.path.join(sysconfig.get_paths()["stdlib"], "json/decoder.py"), encoding="utf-8") as f:
        source = f.read()
    assert redact(source) == (source, {})
