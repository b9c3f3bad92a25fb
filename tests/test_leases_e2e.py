"""Delivery leases end to end: two `relay poll` workers sharing a state table (moto's DynamoDB), a
destination that holds its 250 for seconds (capture server, data_delay), and a copy of the job
injected into the queue while the first worker waits for that 250 — what SQS does when a job's
visibility runs out, or when it delivers a message twice.
"""

import collections
import time

import pytest

from harness import wait_until
from test_relay_e2e import enqueue, log_lines, queue_drained, start_relay

HOLD_S = 6


def delivered(mx):
    return collections.Counter(r for m in mx.messages() for r in m["rcpt_tos"])


def logged(relays, message):
    return [line for r in relays for line in log_lines(r) if line.get("message") == message]


@pytest.fixture
def held_250(dns_server, capture_server, loopback_hosts):
    """example.test's MX, answering the end of DATA only after HOLD_S seconds."""
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port, data_delay=HOLD_S)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    return mx, dns, port


def inject_copy_while_the_250_is_held(spool, mx, job):
    wait_until(lambda: [e for e in mx.events() if e["event"] == "data"], 30, what="a worker waiting for its 250")
    spool.send_job(job)


def test_a_copy_injected_while_the_first_worker_waits_for_the_250_is_not_delivered_again(
        held_250, spool, state_table, start_process):
    mx, dns, port = held_250
    workers = [start_relay(start_process, spool, dns, port, **state_table.env) for _ in range(2)]
    job = enqueue(spool, "example.test", ["bob@example.test"])
    inject_copy_while_the_250_is_held(spool, mx, job)

    [deferral] = wait_until(lambda: logged(workers, "being delivered by another worker; re-enqueued"), 20,
                            what="the copy put back by the other worker")
    assert (deferral["queue_id"], deferral["holder"], deferral["delay"]) == (job["queue_id"], job["job_id"], 30)
    mx.wait_for(1, timeout=30)
    wait_until(lambda: logged(workers, "already completed (message deleted); acknowledged"), 60,
               what="the copy back after the lease: nothing left to do")
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert delivered(mx) == {"bob@example.test": 1}, "one copy"
    assert [line["status"] for line in logged(workers, "delivery")] == ["sent"]
    wait_until(lambda: state_table.items() == [], 30, what="lease and session slots released")


def test_without_a_state_table_the_same_copy_is_delivered_twice(held_250, spool, start_process):
    """Today's behaviour without STATE_TABLE (documented): the test above would catch it."""
    mx, dns, port = held_250
    workers = [start_relay(start_process, spool, dns, port) for _ in range(2)]
    assert all("STATE_TABLE unset: features off" in w.log_text() for w in workers)
    job = enqueue(spool, "example.test", ["bob@example.test"])
    inject_copy_while_the_250_is_held(spool, mx, job)
    mx.wait_for(2, timeout=40)
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    time.sleep(1)
    assert delivered(mx) == {"bob@example.test": 2}


def test_a_worker_killed_while_it_waits_for_the_250_leaves_a_lease_that_lapses(
        held_250, spool, state_table, start_process):
    """SIGKILL while the remote holds its 250: the job comes back after its visibility timeout,
    is put back while the dead worker's lease lasts, and is delivered once the lease has lapsed.
    (The capture server drops a transaction whose client vanished before its 250; a server that
    commits before replying would hold one more copy: the window every MTA has.)"""
    mx, dns, port = held_250
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": "20"})
    doomed = start_relay(start_process, spool, dns, port, **state_table.env)
    job = enqueue(spool, "example.test", ["bob@example.test"])
    wait_until(lambda: [e for e in mx.events() if e["event"] == "data"], 30, what="the worker waiting for its 250")
    [lease] = [i for i in state_table.items() if i["pk"]["S"].startswith("lease#")]
    assert (lease["pk"]["S"], lease["sk"]["S"]) == (f"lease#{job['queue_id']}", "example.test")
    assert lease["job_id"]["S"] == job["job_id"] and int(lease["ttl"]["N"]) > time.time()
    doomed.proc.kill()
    doomed.proc.wait(10)
    survivor = start_relay(start_process, spool, dns, port, **state_table.env)
    wait_until(lambda: queue_drained(spool) and logged([survivor], "delivery"), 120,
               what="the job delivered by the surviving worker")
    lines = logged([survivor], "delivery")
    assert [line["status"] for line in lines] == ["sent"]
    assert logged([survivor], "being delivered by another worker; re-enqueued"), "the dead worker's lease held it back"
    assert delivered(mx) == {"bob@example.test": 1}
    wait_until(lambda: not [i for i in state_table.items() if i["pk"]["S"].startswith("lease#")], 30,
               what="the survivor's lease released")


def test_what_leases_and_shared_slots_cost_in_requests(dns_server, capture_server, loopback_hosts, spool,
                                                       state_table, dynamo, start_process):
    """The DynamoDB requests of 20 one-recipient jobs delivered by one worker over pooled
    sessions, counted on the wire (a recording proxy in front of moto): a lease is one
    conditional put and one delete per job; the suppression list one BatchGetItem per job; a
    session slot one query, one put and one delete per session opened, plus a look for holds at
    most every 5 s while sessions are reused."""
    import urllib.parse

    from aws_proxy import AwsProxy

    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    proxy = AwsProxy(upstream=urllib.parse.urlsplit(dynamo.endpoint).netloc)
    try:
        jobs = 20
        for i in range(jobs):
            enqueue(spool, "example.test", [f"r{i}@example.test"])
        relay = start_relay(start_process, spool, dns, port, STATE_TABLE=state_table.name,
                            AWS_ENDPOINT_URL_DYNAMODB=proxy.url, RELAY_DESTINATION_CONCURRENCY="2",
                            RELAY_CONNECTION_IDLE="1s")
        mx.wait_for(jobs, timeout=60)
        wait_until(lambda: queue_drained(spool) and state_table.items() == [], 30, what="done, all released")
        ops = collections.Counter(proxy.ops("dynamodb."))
        sessions = len(mx.sessions())
        per_job = {op: round(n / jobs, 2) for op, n in sorted(ops.items())}
        print(f"\nDynamoDB requests for {jobs} jobs over {sessions} sessions: {dict(ops)}; per job {per_job}")
        puts = proxy.statuses("dynamodb.PutItem")
        lost = sum(1 for status in puts if status == 400)
        assert puts.count(200) == jobs + sessions, "a lease per job, a slot per session"
        # Two sessions opened at once may try the same slot: the loser's conditional put fails
        # and it takes the next one (a request, and a write unit, of its own).
        assert lost <= sessions, f"{lost} slot claims lost over {sessions} sessions"
        assert ops["dynamodb.DeleteItem"] == jobs + sessions, "each released"
        assert set(puts) <= {200, 400}, puts
        assert sessions <= ops["dynamodb.Query"] <= sessions + jobs, "a look per session, and for holds"
        assert ops["dynamodb.BatchGetItem"] == jobs, "the suppression list: one look per job"
        assert set(ops) == {"dynamodb.PutItem", "dynamodb.DeleteItem", "dynamodb.Query", "dynamodb.BatchGetItem"}, \
            "no renewals: short jobs"
        assert "being delivered by another worker" not in relay.log_text()
    finally:
        proxy.close()
