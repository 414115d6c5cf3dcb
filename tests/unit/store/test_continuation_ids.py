"""Continuation ids: 128 random bits in 22 URL-safe characters, never read as a command-line option."""

from __future__ import annotations

import pytest

from stateservice.store import approvals
from stateservice.web.approvals import CONTINUATION_ID


def test_an_id_is_22_url_safe_characters() -> None:
    made = {approvals.new_id() for _ in range(2000)}
    assert len(made) == 2000
    assert all(CONTINUATION_ID.fullmatch(made_id) for made_id in made)


def test_an_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-AAAAAAAAAAAAAAAAAAAAA", "--AAAAAAAAAAAAAAAAAAAA", "B-AAAAAAAAAAAAAAAAAAAA"])
    monkeypatch.setattr(approvals.secrets, "token_urlsafe", lambda _: next(drawn))
    assert approvals.new_id() == "B-AAAAAAAAAAAAAAAAAAAA"  # `stateservice approve -A...` would be an option
