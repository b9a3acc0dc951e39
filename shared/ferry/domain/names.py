"""One grammar for every name and reference Ferry stores or looks up (docs/metadata-language.md).

A name is 1-63 characters: lowercase letters, digits, ``.``, ``_`` and ``-``, starting and ending with
a letter or digit. That rules out what Firestore reserves or cannot take as a document id (``.``,
``..``, ``__…__``, ``/``) and what Pub/Sub cannot take in a topic name. Manifest names, owners and every
reference (``upstream``, ``depends_on``, ``produces``, ``resources``, ``producers``) use it.

Path parameters of the API (names, partitions, instance parameters, alert and backfill ids) are checked
against a wider grammar before any lookup: letters, digits and ``. _ - : @ + ~``, starting with a letter or
digit, at most 200 characters (partitions such as ``2026-11-26T14:05`` and ids such as
``plays@2026-11-26T03`` or ``plays~1`` fit). Anything else is 400 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ferry.errors import BadRequest

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
PATH_PARAMETER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+~-]{0,199}$")


def check_path_parameters(params: Mapping[str, object]) -> None:
    """Raise BadRequest naming the first path parameter outside the grammar."""
    for name, value in params.items():
        if isinstance(value, str) and not PATH_PARAMETER.match(value):
            raise BadRequest(f"path parameter {name} is not a valid name or id: letters, digits and . _ - : @ + ~, "
                             "starting with a letter or digit, at most 200 characters",
                             {"field": name, "reason": "invalid name"})


_NAME = re.compile(NAME_PATTERN)


def valid_name(value: object) -> bool:
    """Whether ``value`` is a name of the grammar (for stored data that predates validation)."""
    return isinstance(value, str) and bool(_NAME.match(value))


# For request bodies: a name (or id) that is looked up as a document id must follow the grammar.
ID_PATTERN = PATH_PARAMETER.pattern
