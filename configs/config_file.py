"""Reading a config file strictly: a misspelt setting is an error, not a silent no-op.

The settings ignore unknown environment variables on purpose (the environment carries many
unrelated names), and pydantic-settings applies the same rule to the file. But every line of a
config file was written for this service: ``APIKEY_CACHE_TTL=5`` instead of
``APIKEY_CACHE_TTL_SECONDS=5`` would otherwise leave the default in force without a word.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_CREDENTIALS = re.compile(r"(://[^:/@]*:)[^@]*@")


def unknown_setting_in(path: Path, known: Collection[str]) -> str | None:
    """The first line of ``path`` that sets no known setting, described for an operator."""
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            return f"{path}:{number}: not a NAME=value line"
        name = match.group(1)
        if name in known:
            continue
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{path}:{number}: unknown setting {name}{hint}"
    return None


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: safe to print and to log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _CREDENTIALS.sub(r"\1***@", url)
