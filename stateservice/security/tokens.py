"""Named tokens with scopes: the tokens file, its checks, and the constant-time lookup.

No HTTP here (that is `web/auth.py`): this module reads and validates the YAML tokens file
(`tokens: [{name, sha256, scopes: [...], charts: [...]}]`), finds the entry a presented
secret or a client certificate's CN names, and says whether it may do a thing. Only the
SHA-256 of a secret is stored; a lookup hashes the presented secret and compares it with
every entry (`hmac.compare_digest`), so neither timing nor an early exit tells how close a
guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from stateservice.core.chart import CHART_NAME
from stateservice.errors import StartupError

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIELDS = ("name", "sha256", "scopes", "charts")


class Scope(Enum):
    """What a token may do: read gates and views, report states, resume approvals, administer charts."""

    READ = "read"
    REPORT = "report"
    APPROVE = "approve"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Token:
    """One entry of the tokens file. `charts` None: every chart."""

    name: str
    sha256: str
    scopes: frozenset[Scope]
    charts: frozenset[str] | None = None

    def allows(self, scope: Scope, chart: str | None = None) -> bool:
        """Whether this token has `scope` and, when a chart is named, may touch that chart."""
        # resuming an approval is an operator's act too: admin may, without a scope of its own for it
        if scope not in self.scopes and not (scope is Scope.APPROVE and Scope.ADMIN in self.scopes):
            return False
        return chart is None or self.charts is None or chart in self.charts


@dataclass(frozen=True, slots=True)
class Tokens:
    """Every configured token; `lookup` by secret, `named` by client-certificate CN."""

    entries: tuple[Token, ...]

    def lookup(self, secret: str) -> Token | None:
        """The token whose SHA-256 matches `secret`, comparing with every entry in constant time."""
        digest = hash_secret(secret)
        found: Token | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.sha256):
                found = entry  # no early exit: every entry is compared
        return found

    def named(self, name: str) -> Token | None:
        """The entry called `name` (a client certificate's CN stands in for a token name)."""
        return next((entry for entry in self.entries if entry.name == name), None)


@dataclass(slots=True)
class TokensRef:
    """The tokens the middleware checks; a SIGHUP reload (`security/reload.py`) swaps them in one assignment."""

    tokens: Tokens


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_secret() -> str:
    """A fresh random token secret (256 bits, URL-safe)."""
    return "sst_" + secrets.token_urlsafe(32)


def entry_yaml(token: Token) -> str:
    """The YAML list item to add under `tokens:` for `token`."""
    item: dict[str, Any] = {
        "name": token.name,
        "sha256": token.sha256,
        "scopes": [s.value for s in Scope if s in token.scopes],
    }
    if token.charts is not None:
        item["charts"] = sorted(token.charts)
    return str(yaml.safe_dump([item], sort_keys=False, default_flow_style=None))


def make_token(name: str, scopes: Sequence[str], charts: Sequence[str] = ()) -> tuple[str, Token]:
    """A new secret and its entry. Raises StartupError for a bad name, scope or chart."""
    problems = _check_entry({"name": name, "sha256": "0" * 64, "scopes": list(scopes), "charts": list(charts) or None})
    if problems:
        raise StartupError("; ".join(problems))
    secret = new_secret()
    picked = frozenset(Scope(s) for s in scopes)
    return secret, Token(name, hash_secret(secret), picked, frozenset(charts) if charts else None)


def load_tokens(path: Path) -> Tokens:
    """Read and check the tokens file. Raises StartupError, one `FILE: message` line per problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"{path}: cannot read the tokens file: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_tokens(text, str(path))


def parse_tokens(text: str, source: str) -> Tokens:
    """The tokens in YAML `text`. Raises StartupError listing every problem as `SOURCE: message`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise StartupError(f"{source}: invalid YAML{where}") from None
    if not isinstance(data, dict) or set(data) != {"tokens"} or not isinstance(data["tokens"], list):
        raise StartupError(f"{source}: expected a mapping with one key, 'tokens', holding a list of tokens")
    problems: list[str] = []
    entries: list[Token] = []
    names: set[str] = set()
    digests: set[str] = set()
    for index, item in enumerate(data["tokens"]):
        where = f"{source}: tokens[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with name, sha256, scopes (and optionally charts)")
            continue
        found = _check_entry(item)
        if item.get("name") in names:
            found.append(f"duplicate name {item['name']!r}")
        if item.get("sha256") in digests:
            found.append("the same sha256 as an earlier token")
        problems += [f"{where}: {problem}" for problem in found]
        if found:
            continue
        names.add(item["name"])
        digests.add(item["sha256"])
        charts = item.get("charts")
        entries.append(
            Token(
                item["name"],
                item["sha256"],
                frozenset(Scope(s) for s in item["scopes"]),
                frozenset(charts) if charts is not None else None,
            )
        )
    if problems:
        raise StartupError("\n".join(problems))
    return Tokens(tuple(entries))


def _check_entry(item: dict[str, Any]) -> list[str]:
    problems = [f"unknown key {key!r} (known: {', '.join(FIELDS)})" for key in item if key not in FIELDS]
    name = item.get("name")
    if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
        problems.append(
            f"name {name!r} is not 1-64 letters, digits, '.', '_', '@', '-' (starting with one of the first two)"
        )
    digest = item.get("sha256")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        problems.append("sha256 must be 64 lowercase hex digits (the SHA-256 of the secret, never the secret)")
    scopes = item.get("scopes")
    known = [s.value for s in Scope]
    if not isinstance(scopes, list) or not scopes or any(s not in known for s in scopes):
        problems.append(f"scopes must be a non-empty list of {', '.join(known)}; got {scopes!r}")
    charts = item.get("charts")
    if charts is not None and (
        not isinstance(charts, list)
        or not charts
        or any(not isinstance(c, str) or not CHART_NAME.fullmatch(c) for c in charts)
    ):
        problems.append(
            f"charts must be a non-empty list of chart names (leave it out for every chart); got {charts!r}"
        )
    return problems


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a --host value) listens on loopback only: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name we do not resolve here may point anywhere


def check_exposure(host: str, tokens: Tokens | None, insecure_no_auth: bool) -> None:
    """Refuse to serve beyond loopback without tokens, unless told to. Raises StartupError."""
    if tokens is not None or insecure_no_auth or is_loopback(host):
        return
    raise StartupError(
        f"refusing to listen on {host!r} without authentication: anyone who can connect could move charts. "
        "Give --tokens FILE (see `stateservice token create`), listen on 127.0.0.1, "
        "or pass --insecure-no-auth if something else guards the port"
    )
