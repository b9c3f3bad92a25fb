"""Connection reuse, per-destination limits and provider throttling, end to end: jobs in a
LocalStack queue, one `relay poll`, a real DNS server, and aiosmtpd capture servers counting the
relay's connections at their end (their connect/disconnect events).
"""

import collections
import time

import pytest

from harness import wait_until
from test_relay_e2e import MESSAGE, enqueue, log_lines, queue_drained, start_relay


@pytest.fixture
def one_mx(dns_server, capture_server, loopback_hosts):
    """example.test's only MX, a capture server with the given options; returns (mx, dns, port)."""

    def build(**options):
        (ip,), port = loopback_hosts(1)
        mx = capture_server(ip, port, **options)
        dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
        return mx, dns, port

    return build


def recipients(n):
    return [f"r{i}@example.test" for i in range(n)]


def delivered(mx):
    """Recipients the server accepted, each as often as it did."""
    return collections.Counter(r for m in mx.messages() for r in m["rcpt_tos"])


def statuses(relay):
    return [l for l in log_lines(relay) if l.get("message") == "delivery"]


def test_200_jobs_to_one_destination_share_a_few_sessions_within_the_limit(one_mx, spool, start_process):
    mx, dns, port = one_mx()
    rcpts = recipients(200)
    for r in rcpts:
        enqueue(spool, "example.test", [r])
    relay = start_relay(start_process, spool, dns, port, RELAY_DESTINATION_CONCURRENCY="3",
                        RELAY_MAX_MESSAGES_PER_CONNECTION="50")
    mx.wait_for(200, timeout=240)
    wait_until(lambda: queue_drained(spool), 60, what="empty queue")
    assert delivered(mx) == collections.Counter(rcpts), "every recipient exactly once"
    sessions = mx.sessions()
    assert mx.max_concurrent() <= 3, sessions
    assert 4 <= len(sessions) <= 20, f"200 deliveries in {len(sessions)} sessions"
    per_session = collections.Counter(tuple(m["peer"]) for m in mx.messages())
    assert max(per_session.values()) <= 50, per_session
    lines = statuses(relay)
    assert [l["status"] for l in lines] == ["sent"] * 200
    assert sum(1 for l in lines if l["conn_use"] > 1) >= 180, "most deliveries went over a reused session"
    assert all(m["data"] == MESSAGE for m in mx.messages()[:5])


def test_a_session_dropped_after_its_third_transaction_loses_and_duplicates_nothing(one_mx, spool, start_process):
    mx, dns, port = one_mx(close_after=3)
    rcpts = recipients(10)
    for r in rcpts:
        enqueue(spool, "example.test", [r])
    relay = start_relay(start_process, spool, dns, port, RELAY_DESTINATION_CONCURRENCY="1")
    mx.wait_for(10, timeout=60)
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    time.sleep(1)
    assert delivered(mx) == collections.Counter(rcpts)
    per_session = [sum(1 for m in mx.messages() if tuple(m["peer"]) == s["peer"]) for s in mx.sessions()]
    assert per_session == [3, 3, 3, 1], per_session
    assert [l["status"] for l in statuses(relay)] == ["sent"] * 10, "found closed before the next transaction: no retry"
    assert relay.log_text().count("pooled session found closed") == 3


def test_a_421_4_7_28_at_the_second_transaction_defers_the_rest_without_connecting_and_retry_delivers(
        one_mx, spool, start_process):
    mx, dns, port = one_mx(replies={"DATA#2-2": "421 4.7.28 [127.0.0.1] mail from your IP is temporarily rate limited"})
    rcpts = recipients(8)
    jobs = [enqueue(spool, "example.test", [r]) for r in rcpts]
    relay = start_relay(start_process, spool, dns, port, RELAY_DESTINATION_CONCURRENCY="1",
                        RELAY_THROTTLE_BACKOFF="4s")
    mx.wait_for(8, timeout=90)
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    time.sleep(1)
    assert delivered(mx) == collections.Counter(rcpts), "all delivered once, the refused one included"

    [throttled_at] = [e["time"] for e in mx.events() if e["event"] == "data" and e["reply"].startswith("421")]
    opened = [s["opened"] for s in mx.sessions()]
    assert opened[0] < throttled_at
    assert all(t >= throttled_at + 3 for t in opened[1:]), ("a connection during the hold", opened, throttled_at)

    lines = statuses(relay)
    deferred = [l for l in lines if l["status"] == "deferred"]
    assert len(deferred) == 7, deferred  # the refused transaction and the six after it
    assert all(l["throttled"] and 1 <= l["delay"] <= 5 for l in deferred), deferred  # the hold, rounded up, +1 s
    assert any("421 4.7.28" in l["reply"] for l in deferred)
    assert sum("asked to slow down" in l["reply"] for l in deferred) == 6, "held jobs name the destination"
    sent = [l for l in lines if l["status"] == "sent"]
    assert len(sent) == 8 and all(l["attempt"] == 1 for l in sent), "a throttled attempt is not counted"
    assert {l["queue_id"] for l in sent} == {j["queue_id"] for j in jobs}
    relay.wait_log(r"destination asked to slow down")


def test_an_idle_session_waits_for_the_next_batch_then_closes(one_mx, spool, start_process):
    mx, dns, port = one_mx()
    relay = start_relay(start_process, spool, dns, port, RELAY_CONNECTION_IDLE="3s")
    enqueue(spool, "example.test", ["first@example.test"])
    mx.wait_for(1, timeout=30)
    enqueue(spool, "example.test", ["second@example.test"])
    first, second = mx.wait_for(2, timeout=30)
    assert first["peer"] == second["peer"], "the second batch reused the idle session"
    [session] = wait_until(lambda: [s for s in mx.sessions() if s["closed"]], 15, what="the idle session closed")
    assert session["closed"] - second["received_at"] >= 2.5, "kept for RELAY_CONNECTION_IDLE"
    assert len(mx.sessions()) == 1
    assert [l["conn_use"] for l in statuses(relay)] == [1, 2]
