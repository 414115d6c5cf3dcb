"""The dashboard's sessions: signed cookies that expire, and CSRF tokens bound to one session."""

from __future__ import annotations

import base64

from stateservice.dashboard.session import ANONYMOUS, Sessions

NOW = 1_800_000_000.0


def test_a_cookie_reads_back_as_its_session_until_it_expires() -> None:
    sessions = Sessions(b"k" * 32, lifetime=60)
    session = sessions.new("alice", NOW)
    value = sessions.cookie(session)
    assert sessions.read(value, NOW + 59) == session and session.signed_in
    assert sessions.read(value, NOW + 60) is None


def test_an_altered_or_foreign_cookie_is_no_session() -> None:
    sessions = Sessions(b"k" * 32)
    value = sessions.cookie(sessions.new(ANONYMOUS, NOW))
    _, signature = value.split(".")
    forged = base64.urlsafe_b64encode(b'["alice", 1900000000, "n"]').decode().rstrip("=")
    assert sessions.read(f"{forged}.{signature}", NOW) is None
    assert Sessions(b"x" * 32).read(value, NOW) is None  # another service's key
    assert sessions.read("garbage", NOW) is None and sessions.read(None, NOW) is None and sessions.read("", NOW) is None


def test_the_csrf_token_is_the_sessions_own() -> None:
    sessions = Sessions(b"k" * 32)
    mine, theirs = sessions.new(ANONYMOUS, NOW), sessions.new(ANONYMOUS, NOW)
    assert sessions.check_csrf(mine, sessions.csrf(mine))
    assert not sessions.check_csrf(mine, sessions.csrf(theirs))
    assert not sessions.check_csrf(mine, None) and not sessions.check_csrf(mine, "")


def test_signing_in_makes_a_new_nonce() -> None:
    sessions = Sessions(b"k" * 32)
    assert sessions.new(ANONYMOUS, NOW).nonce != sessions.new("alice", NOW).nonce
    assert not sessions.new(ANONYMOUS, NOW).signed_in


def test_a_session_keeps_the_start_of_its_tokens_digest() -> None:
    sessions = Sessions(b"k" * 32)
    session = sessions.new("alice", NOW, "ab" * 32)
    assert session.digest == "ab" * 8
    assert sessions.read(sessions.cookie(session), NOW) == session


def test_a_cookie_with_other_than_ascii_is_no_session() -> None:
    sessions = Sessions(b"k" * 32)
    assert sessions.read("abc.d\u00e9f", NOW) is None and sessions.read("\u00e9.abc", NOW) is None
