"""security/tokens.py: the tokens file, the constant-time lookup, scopes, and the loopback-only default."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from stateservice.errors import StartupError
from stateservice.security.tokens import (
    Scope,
    Token,
    Tokens,
    check_exposure,
    entry_yaml,
    hash_secret,
    is_loopback,
    make_token,
    parse_tokens,
)

A, B = "a" * 64, "b" * 64
GOOD = textwrap.dedent(
    f"""\
    tokens:
      - name: chef
        sha256: {hash_secret("s3cret")}
        scopes: [read, report]
        charts: [rollout]
      - name: ops
        sha256: {hash_secret("admin-secret")}
        scopes: [read, report, admin]
    """
)


def test_a_good_file_parses() -> None:
    tokens = parse_tokens(GOOD, "tokens.yaml")
    assert [t.name for t in tokens.entries] == ["chef", "ops"]
    chef = tokens.entries[0]
    assert chef.scopes == {Scope.READ, Scope.REPORT}
    assert chef.charts == {"rollout"}
    assert tokens.entries[1].charts is None


def test_lookup_finds_the_token_by_its_secret_only() -> None:
    tokens = parse_tokens(GOOD, "tokens.yaml")
    found = tokens.lookup("s3cret")
    assert found is not None and found.name == "chef"
    assert tokens.lookup("s3cre") is None
    assert tokens.lookup(hash_secret("s3cret")) is None  # the stored hash is no password
    assert tokens.lookup("") is None
    assert tokens.named("ops") is tokens.entries[1]
    assert tokens.named("nobody") is None


def test_scopes_and_charts() -> None:
    chef = Token("chef", "0" * 64, frozenset({Scope.READ, Scope.REPORT}), frozenset({"rollout"}))
    assert chef.allows(Scope.REPORT, "rollout")
    assert not chef.allows(Scope.REPORT, "other")
    assert not chef.allows(Scope.ADMIN, "rollout")
    assert chef.allows(Scope.READ)
    anywhere = Token("ops", "0" * 64, frozenset({Scope.ADMIN}))
    assert anywhere.allows(Scope.ADMIN, "anything")
    assert not anywhere.allows(Scope.READ, "anything")  # scopes do not imply each other


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokens: [", "tokens.yaml: invalid YAML (line 1)"),
        ("- name: a", "tokens.yaml: expected a mapping with one key, 'tokens'"),
        ("tokens: {}", "expected a mapping with one key"),
        ("tokens: [a]", "tokens.yaml: tokens[0]: expected a mapping"),
        (f"tokens: [{{name: a, sha256: {A}, scopes: [write]}}]", "tokens[0]: scopes must be a non-empty list"),
        (f"tokens: [{{name: a, sha256: {A}, scopes: []}}]", "scopes must be a non-empty list"),
        ("tokens: [{name: a, sha256: secret, scopes: [read]}]", "tokens[0]: sha256 must be 64 lowercase hex digits"),
        (f"tokens: [{{name: 'a b', sha256: {A}, scopes: [read]}}]", "tokens[0]: name 'a b' is not"),
        (f"tokens: [{{name: a, sha256: {A}, scopes: [read], chart: [x]}}]", "unknown key 'chart'"),
        (f"tokens: [{{name: a, sha256: {A}, scopes: [read], charts: ['{{x}}']}}]", "charts must be"),
        (
            f"tokens: [{{name: a, sha256: {A}, scopes: [read]}}, {{name: a, sha256: {B}, scopes: [read]}}]",
            "tokens[1]: duplicate name 'a'",
        ),
        (
            f"tokens: [{{name: a, sha256: {A}, scopes: [read]}}, {{name: b, sha256: {A}, scopes: [read]}}]",
            "tokens[1]: the same sha256 as an earlier token",
        ),
    ],
)
def test_bad_files_fail_start_up_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(StartupError) as caught:
        parse_tokens(text, "tokens.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("tokens.yaml: ")


def test_every_problem_is_reported() -> None:
    text = "tokens: [{name: 'a b', sha256: x, scopes: [read]}, {name: ok, sha256: y, scopes: [root]}]"
    with pytest.raises(StartupError) as caught:
        parse_tokens(text, "t.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("t.yaml: tokens[") for line in lines)


def test_make_token_prints_an_entry_that_loads_and_matches_its_secret() -> None:
    secret, token = make_token("deploy", ["read", "report"], ["rollout"])
    assert secret not in entry_yaml(token)
    loaded = parse_tokens("tokens:\n" + entry_yaml(token), "t.yaml")
    assert loaded.lookup(secret) == token
    assert yaml.safe_load(entry_yaml(token))[0]["scopes"] == ["read", "report"]
    other, _ = make_token("deploy", ["read"])
    assert other != secret and len(secret) > 40


def test_make_token_refuses_bad_input() -> None:
    with pytest.raises(StartupError, match="scopes"):
        make_token("deploy", ["write"])
    with pytest.raises(StartupError, match="name"):
        make_token("de ploy", ["read"])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, None, insecure_no_auth=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.1", "example.com", "128.0.0.1"])
def test_other_hosts_need_tokens_or_the_explicit_flag(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(StartupError, match="without authentication"):
        check_exposure(host, None, insecure_no_auth=False)
    check_exposure(host, None, insecure_no_auth=True)
    check_exposure(host, Tokens(()), insecure_no_auth=False)
