"""RELAY_DESTINATION_CONCURRENCY and "slow down" holds across workers, end to end: two `relay poll`
workers on one queue, a state table on moto's DynamoDB, and an aiosmtpd capture server counting
the sessions open at its end (its own connect/disconnect events: the relay's word is not taken).
"""

import collections
import time

import pytest

from harness import wait_until
from test_relay_e2e import enqueue, log_lines, queue_drained, start_relay

JOBS = 24


@pytest.fixture
def slow_mx(dns_server, capture_server, loopback_hosts):
    """example.test's MX: each 250 to the end of DATA held 0.4 s, so sessions overlap."""

    def build(**options):
        (ip,), port = loopback_hosts(1)
        mx = capture_server(ip, port, data_delay=0.4, **options)
        dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
        return mx, dns, port

    return build


def two_workers(start_process, spool, dns, port, **env):
    settings = {"RELAY_DESTINATION_CONCURRENCY": "2", "RELAY_MAX_MESSAGES_PER_CONNECTION": "3",
                "RELAY_CONNECTION_IDLE": "1s", **env}
    return [start_relay(start_process, spool, dns, port, **settings) for _ in range(2)]


def fill(spool, n=JOBS):
    rcpts = [f"r{i}@example.test" for i in range(n)]
    for r in rcpts:
        enqueue(spool, "example.test", [r])
    return rcpts


def delivered(mx):
    return collections.Counter(r for m in mx.messages() for r in m["rcpt_tos"])


def test_two_workers_with_a_limit_of_2_never_have_more_than_2_sessions_open_at_once(
        slow_mx, spool, state_table, start_process):
    mx, dns, port = slow_mx()
    workers = two_workers(start_process, spool, dns, port, **state_table.env)
    rcpts = fill(spool)
    mx.wait_for(JOBS, timeout=200)
    wait_until(lambda: queue_drained(spool), 60, what="empty queue")
    assert delivered(mx) == collections.Counter(rcpts), "every recipient exactly once"
    assert mx.max_concurrent() <= 2, mx.sessions()
    peers = {tuple(m["peer"]) for m in mx.messages()}
    assert len(peers) >= JOBS // 3, "sessions carried at most 3 messages each, as configured"
    senders = [sum(1 for line in log_lines(w) if line.get("message") == "delivery") for w in workers]
    assert all(senders), f"both workers delivered: {senders}"
    wait_until(lambda: state_table.items() == [], 30, what="every slot released when its session closed")


def test_without_a_state_table_the_limit_is_per_worker(slow_mx, spool, start_process):
    """What the test above would catch: each worker keeps its own 2."""
    mx, dns, port = slow_mx()
    two_workers(start_process, spool, dns, port)
    fill(spool)
    mx.wait_for(JOBS, timeout=120)
    assert mx.max_concurrent() > 2, mx.sessions()


def test_a_slow_down_reply_to_one_worker_holds_the_destination_for_both(slow_mx, spool, state_table, start_process):
    mx, dns, port = slow_mx(replies={"DATA#3-3": "421 4.7.28 [127.0.0.1] temporarily rate limited"})
    workers = two_workers(start_process, spool, dns, port, RELAY_THROTTLE_BACKOFF="8s", **state_table.env)
    rcpts = fill(spool)  # both workers have jobs of the destination when the hold starts
    mx.wait_for(JOBS, timeout=200)
    wait_until(lambda: queue_drained(spool), 60, what="empty queue")
    assert delivered(mx) == collections.Counter(rcpts), "all delivered once, the refused one included"
    [throttled_at] = [e["time"] for e in mx.events() if e["event"] == "data" and e["reply"].startswith("421")]
    opened = [s["opened"] for s in mx.sessions()]
    # (A worker that looked for a slot just before the hold was written may still connect at once.)
    during = [t for t in opened if throttled_at + 0.5 < t < throttled_at + 7.5]
    assert during == [], ("a session opened during the 8 s hold", during, throttled_at)
    # Sessions already open stop within share::slots::LOOK_EVERY (5 s) of the hold.
    late = [e["time"] for e in mx.events() if e["event"] == "data" and throttled_at + 6.5 < e["time"] < throttled_at + 7.5]
    assert late == [], ("a transaction late in the hold", late, throttled_at)
    told = [w for w in workers if "destination asked to slow down" in w.log_text()]
    held = [w for w in workers if "another worker was asked to slow down" in w.log_text()]
    assert len(told) == 1 and held and held[0] is not told[0], "the other worker adopted the hold"
    hold = [i for i in state_table.items() if i["sk"]["S"] == "hold"]
    assert hold == [] or int(hold[0]["until"]["N"]) <= time.time() * 1000 + 1000
