"""Resource names of the registry, parsed with the field path to blame when one is malformed."""

from __future__ import annotations

import re

from modelplane.server.errors import InvalidArgument, shown

# A model id, an alias: 1 to 63 lower-case letters, digits and "-", starting with a letter.
ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MODEL = re.compile(r"models/(?P<model>[^/]+)")
_VERSION = re.compile(r"models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)")
# A resource number: 1 to 18 ASCII digits (int64 holds it).
NUMBER = re.compile(r"[0-9]{1,18}")
_ALIAS = re.compile(r"models/(?P<model>[^/]+)/aliases/(?P<alias>[^/]+)")

_ID_RULE = "1 to 63 lower-case letters, digits or '-', starting with a letter"


def check_id(value: str, path: str, what: str = "id") -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument.field(path, f"{what} {shown(value)} is not valid: use {_ID_RULE}")
    return value


def parse_model(name: str, path: str) -> str:
    """The model id of "models/{model}"."""
    match = _MODEL.fullmatch(name)
    if not match:
        raise InvalidArgument.field(path, f"{shown(name)} is not a model name; expected models/{{model}}")
    return check_id(match["model"], path, "model id")


def parse_version(name: str, path: str) -> tuple[str, int]:
    """(model id, version number) of "models/{model}/versions/{n}"."""
    match = _VERSION.fullmatch(name)
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not match or not NUMBER.fullmatch(match["version"]) or int(match["version"]) < 1:
        raise InvalidArgument.field(
            path, f"{shown(name)} is not a version name; expected models/{{model}}/versions/{{n}} with n >= 1"
        )
    return check_id(match["model"], path, "model id"), int(match["version"])


def parse_alias(name: str, path: str) -> tuple[str, str]:
    """(model id, alias) of "models/{model}/aliases/{alias}"."""
    match = _ALIAS.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            path, f"{shown(name)} is not an alias name; expected models/{{model}}/aliases/{{alias}}"
        )
    return check_id(match["model"], path, "model id"), check_id(match["alias"], path, "alias")
