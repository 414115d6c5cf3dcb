"""slots.py: grants, renewals, releases, expiry and the wait estimate; then a random run of requests as a property."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core.slots import MAX_RETRY_AFTER, MIN_RETRY_AFTER, Full, Granted, Slot, acquire, expire, release

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_hosts_get_slots_until_the_limit_then_wait() -> None:
    holders: dict[str, Slot] = {}
    for n, host in enumerate(["a", "b"]):
        granted = acquire(holders, host, 2, TTL, at(n))
        assert isinstance(granted, Granted) and not granted.renewed
        assert granted.slot == Slot(host, at(n), at(n) + TTL)
        holders = granted.holders
    refused = acquire(holders, "c", 2, TTL, at(5))
    assert refused == Full(held=2, limit=2, retry_after=MAX_RETRY_AFTER)  # 10 minutes away: capped


def test_asking_again_renews_and_never_takes_a_second_slot() -> None:
    first = acquire({}, "a", 1, TTL, at(0))
    assert isinstance(first, Granted)
    again = acquire(first.holders, "a", 1, TTL, at(30))
    assert isinstance(again, Granted) and again.renewed
    assert again.holders == {"a": Slot("a", at(0), at(30) + TTL)}  # granted_at kept: the hold time is honest


def test_release_frees_the_slot_and_is_idempotent() -> None:
    granted = acquire({}, "a", 1, TTL, at(0))
    assert isinstance(granted, Granted)
    holders, released = release(granted.holders, "a")
    assert holders == {} and released == granted.slot
    assert release(holders, "a") == ({}, None)


def test_expiry_frees_exactly_the_slots_past_their_ttl() -> None:
    holders = {"a": Slot("a", at(0), at(10)), "b": Slot("b", at(0), at(20)), "c": Slot("c", at(5), at(10))}
    alive, gone = expire(holders, at(10))
    assert alive == {"b": holders["b"]}
    assert gone == [holders["a"], holders["c"]]


def test_the_wait_is_the_soonest_expected_release() -> None:
    holders = {"a": Slot("a", at(0), at(600)), "b": Slot("b", at(50), at(650))}
    assert acquire(holders, "c", 2, TTL, at(100)) == Full(2, 2, MAX_RETRY_AFTER)
    # hosts usually hold for 2 minutes: a's is expected back at 120 s
    assert acquire(holders, "c", 2, TTL, at(100), hold_time=timedelta(minutes=2)) == Full(2, 2, 20)
    # overdue by the usual hold time: ask again soon, not never
    assert acquire(holders, "c", 2, TTL, at(400), hold_time=timedelta(minutes=2)) == Full(2, 2, MIN_RETRY_AFTER)
    near = {"a": Slot("a", at(0), at(100.2))}
    assert acquire(near, "c", 1, TTL, at(100)) == Full(1, 1, 1)


# --- property: any run of requests from several hosts over time ---

requests = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "report"]),
        st.sampled_from([f"h{n}" for n in range(8)]),
        st.integers(0, 400),  # seconds since the previous request
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(st.integers(1, 4), st.integers(1, 900), requests)
def test_never_more_than_the_limit_and_expiry_frees_exactly_the_expired(
    limit: int, ttl_seconds: int, run: list[tuple[str, str, int]]
) -> None:
    ttl = timedelta(seconds=ttl_seconds)
    holders: dict[str, Slot] = {}
    now = T0
    for action, host, step in run:
        now += timedelta(seconds=step)
        before = dict(holders)
        holders, gone = expire(holders, now)
        assert {s.host for s in gone} == {h for h, s in before.items() if s.expires_at <= now}
        assert all(s.expires_at > now for s in holders.values())
        if action == "acquire":
            answer = acquire(holders, host, limit, ttl, now)
            if isinstance(answer, Full):
                assert len(holders) == limit and host not in holders
                assert MIN_RETRY_AFTER <= answer.retry_after <= MAX_RETRY_AFTER
            else:
                assert answer.renewed == (host in holders)
                assert answer.slot.expires_at == now + ttl
                holders = answer.holders
        else:  # a report or an explicit release frees the host's slot the same way
            holders, released = release(holders, host)
            assert (released is not None) == (host in before and before[host].expires_at > now)
        assert len(holders) <= limit
        assert all(slot.host == name for name, slot in holders.items())  # one slot per host, its own
