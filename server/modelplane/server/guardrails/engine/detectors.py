"""The built-in PII and secret detectors: an RE2 pattern per kind that finds candidates, and a validator
(Luhn, IBAN mod-97, SSN ranges, IP address parsing) run on candidates only.

Validated kinds find maximal tokens (a whole run of digits and separators, a whole dotted number) and
validate the token, so what a detector reports does not depend on where a scan started; that is what
lets a stream check trust a match before the text is complete (`early`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from modelplane.server.guardrails.engine.rules import PiiKind

# A validator gets the candidate text and returns the span (within the candidate) of the valid part.
Validator = Callable[[str], tuple[int, int] | None]


@dataclass(frozen=True)
class Detector:
    """One PII kind: `pattern` finds candidates (RE2 syntax), `validator` confirms them, `keep_last`
    characters stay readable in an excerpt, `early`: a stream check may report a match before the end.

    `needs`: ASCII bytes of which every match of `pattern` contains at least one (empty: no such
    promise). Once the text has none of them left, the scan stops looking for further matches."""

    kind: PiiKind
    pattern: str
    validator: Validator | None
    keep_last: int
    early: bool
    needs: bytes = b""


_DIGITS = b"0123456789"


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(candidate: str) -> tuple[int, int] | None:
    """The longest run of whole digit groups (first by start) that is a 13-19 digit, Luhn-valid number
    starting with 2-6 (the issuer ranges of the card networks in use)."""
    if len(candidate) - candidate.count(" ") - candidate.count("-") < 13:
        return None
    groups: list[tuple[int, int]] = []
    start = -1
    for index, char in enumerate(candidate + " "):
        if char.isdigit():
            if start < 0:
                start = index
        elif start >= 0:
            groups.append((start, index))
            start = -1
    best: tuple[int, int] | None = None
    for first in range(len(groups)):
        for last in range(first, len(groups)):
            span = (groups[first][0], groups[last][1])
            digits = "".join(candidate[a:b] for a, b in groups[first : last + 1])
            if len(digits) > 19:
                break
            if (
                len(digits) >= 13
                and digits[0] in "23456"
                and luhn_valid(digits)
                and (best is None or span[1] - span[0] > best[1] - best[0])
            ):
                best = span
        if best is not None:
            return best
    return None


def iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _iban(candidate: str) -> tuple[int, int] | None:
    """The candidate, or the candidate without trailing space-separated groups, whose checksum holds."""
    end = len(candidate)
    while end > 0:
        if iban_valid(candidate[:end].replace(" ", "")):
            return (0, end)
        end = candidate.rfind(" ", 0, end)
    return None


def _ssn(candidate: str) -> tuple[int, int] | None:
    """US SSNs never have area 000, 666 or 900-999, group 00 or serial 0000."""
    digits = candidate.replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return (0, len(candidate))


def _ipv4(candidate: str) -> tuple[int, int] | None:
    """Exactly four decimal parts of 0-255 without leading zeros; '1.2.3.4.5' is a version, not an IP."""
    if candidate.count(".") != 3:
        return None
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return None
    return (0, len(candidate))


def _ipv6(candidate: str) -> tuple[int, int] | None:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return (0, len(candidate))


_SECRETS = "|".join(
    (
        r"\bsk-(?:proj-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{20,}",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        r"\bxox[abeprs]-[A-Za-z0-9-]{10,}",
        r"\bAIza[0-9A-Za-z_-]{35}\b",
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    )
)

# Several detectors may share a kind (IPv4 and IPv6); each is scanned for as one pattern of the set.
DETECTORS: tuple[Detector, ...] = (
    Detector(
        PiiKind.EMAIL,
        r"\b[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b",
        None,
        0,
        True,
        b"@",
    ),
    Detector(
        PiiKind.PHONE_NUMBER,
        # International numbers with their '+', and North American ones written with parentheses,
        # dashes or dots: bare groups of digits separated by spaces are more often something else.
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}|\b\d{3}[.-]\d{3}[.-]\d{4})\b",
        lambda c: (0, len(c)) if 10 <= sum(map(str.isdigit, c)) <= 15 else None,
        2,
        False,
        _DIGITS,
    ),
    Detector(PiiKind.PAYMENT_CARD, r"\b\d+(?:[ -]\d+)*\b", _card, 4, True, _DIGITS),
    Detector(PiiKind.IBAN, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b", _iban, 4, False, _DIGITS),
    Detector(PiiKind.US_SSN, r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b", _ssn, 0, False, _DIGITS),
    Detector(PiiKind.IP_ADDRESS, r"\b\d+(?:\.\d+)+\b", _ipv4, 0, True, _DIGITS),
    Detector(
        PiiKind.IP_ADDRESS,
        r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){1,7}",
        _ipv6,
        0,
        False,
        b":",
    ),
    # sk-, xox?- and the key armour hold a '-', gh?_ a '_', AKIA, ASIA and AIza an 'A', a JWT its 'J'.
    Detector(PiiKind.SECRET, _SECRETS, None, 0, True, b"-_AJ"),
)
