"""Faults under load, end to end: mail sent through the ingress while `relay poll` workers (sharing a
state table on moto's DynamoDB: leases, session slots) are SIGKILLed mid-delivery, and while S3,
SQS and DynamoDB go away (recording proxies that drop every connection, tests/aws_proxy.py).

What must hold: every message the ingress answered `250` is delivered; no job waits behind a
dead worker's lease or slot longer than their terms; nothing lands in the dead-letter queue.
Duplicates are counted and printed; the only ones expected come from a delivery in flight when
its worker was killed (the window every MTA has between the remote's commit and its own record).
"""

import collections
import smtplib
import threading
import time
import urllib.parse

import pytest

from aws_proxy import AwsProxy
from harness import wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_relay_e2e import queue_drained, start_relay

SENDER = "alice@example.org"


def body(i):
    return f"From: {SENDER}\r\nTo: r{i}@example.test\r\nSubject: fault test {i}\r\n\r\nmessage {i}\r\n".encode()


class Sender(threading.Thread):
    """Sends messages 0..n-1 through the ingress, one recipient each (r<i>@example.test), each
    until it gets a 250 (a 4xx or a dropped connection is tried again a second later, as a
    client MTA would); .acknowledged holds the recipients of the 250s."""

    def __init__(self, server, n, pause=0.05):
        super().__init__(daemon=True)
        self.server, self.n, self.pause = server, n, pause
        self.acknowledged, self.refusals = [], 0

    def run(self):
        for i in range(self.n):
            while not self.send(i):
                self.refusals += 1
                time.sleep(1)
            time.sleep(self.pause)

    def send(self, i):
        try:
            with smtplib.SMTP(*self.server.mta, timeout=60) as c:
                c.sendmail(SENDER, [f"r{i}@example.test"], body(i))
        except (smtplib.SMTPException, OSError):
            return False
        self.acknowledged.append(f"r{i}@example.test")
        return True


def delivered(mx):
    return collections.Counter(r for m in mx.messages() for r in m["rcpt_tos"])


def report(what, mx, sender):
    got = delivered(mx)
    dup = {r: n for r, n in got.items() if n > 1}
    print(f"\n{what}: {len(sender.acknowledged)} acknowledged, {sum(got.values())} deliveries, "
          f"{len(dup)} duplicated {sorted(dup)}, {sender.refusals} refusals retried by the client")
    return got, dup


@pytest.fixture
def mx(dns_server, capture_server, loopback_hosts):
    (ip,), port = loopback_hosts(1)
    server = capture_server(ip, port, data_delay=0.3)
    return server, dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}"), port


def all_delivered(capture, want, timeout):
    try:
        wait_until(lambda: set(delivered(capture)) >= set(want), timeout, what="every acknowledged message delivered")
    except AssertionError as e:
        raise AssertionError(f"{e}: missing {sorted(set(want) - set(delivered(capture)))}") from None


def lapsed_only(state_table):
    """Every item left in the table has lapsed (a killed worker's lease or slot stays until
    DynamoDB's TTL removes it, but no one waits for it)."""
    now_ms = time.time() * 1000
    return all(int(i.get("until", {"N": "0"})["N"]) <= now_ms for i in state_table.items())


def test_workers_killed_mid_delivery_lose_nothing_and_strand_no_job(
        ingress, mx, spool, state_table, start_process):  # noqa: F811
    capture, dns, port = mx
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": "20"})
    env = {**state_table.env, "RELAY_DESTINATION_CONCURRENCY": "3", "RELAY_RETRY_SCHEDULE": "2s"}
    workers = [start_relay(start_process, spool, dns, port, **env) for _ in range(3)]
    sender = Sender(ingress(**state_table.env), 60)
    sender.start()
    kills = 0
    for _ in range(2):
        # Kill a worker while a session is open at the destination (a transaction in flight).
        wait_until(lambda: any(s["closed"] is None for s in capture.sessions()), 60, what="a session open")
        victim = workers.pop(0)
        victim.proc.kill()
        victim.proc.wait(10)
        kills += 1
        workers.append(start_relay(start_process, spool, dns, port, **env))
        time.sleep(3)
    sender.join(120)
    assert not sender.is_alive()
    want = collections.Counter(sender.acknowledged)
    all_delivered(capture, want, 200)
    wait_until(lambda: queue_drained(spool), 60, what="empty queue")
    got, dup = report(f"{kills} workers killed", capture, sender)
    assert set(got) == set(want), "nothing acknowledged lost, nothing invented"
    assert sum(dup.values()) - len(dup) <= kills * 3, "duplicates only from deliveries in flight at a kill"
    assert spool.counts(dlq=True) == {"visible": 0, "in_flight": 0, "delayed": 0}
    wait_until(lambda: lapsed_only(state_table), 70, what="no live lease or slot of a dead worker left")


def proxy_to(endpoint):
    return AwsProxy(upstream=urllib.parse.urlsplit(endpoint).netloc)


def test_s3_sqs_and_dynamodb_outages_lose_nothing(ingress, mx, spool, state_table, dynamo, start_process):  # noqa: F811
    capture, dns, port = mx
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": "30"})
    to_ingress, to_relays, to_table = AwsProxy(), AwsProxy(), proxy_to(dynamo.endpoint)
    try:
        table = {"STATE_TABLE": state_table.name, "AWS_ENDPOINT_URL_DYNAMODB": to_table.url}
        env = {**table, "AWS_ENDPOINT_URL": to_relays.url, "RELAY_RETRY_SCHEDULE": "2s",
               "RELAY_DESTINATION_CONCURRENCY": "3"}
        workers = [start_relay(start_process, spool, dns, port, **env) for _ in range(2)]
        sender = Sender(ingress(AWS_ENDPOINT_URL=to_ingress.url, **table), 80, pause=0.5)
        sender.start()
        wait_until(lambda: len(capture.messages()) >= 5, 60, what="mail flowing")
        to_ingress.outage(6)  # S3 and SQS away for the ingress: 451s, which the sender retries
        time.sleep(8)
        to_table.outage(10)  # DynamoDB away: leases and slots fail open, delivery goes on
        time.sleep(12)
        assert sender.is_alive(), "the outages happen while mail comes in"
        to_relays.outage(10)  # S3 and SQS away for the relays: jobs retried, writes after a delivery retried
        sender.join(150)
        assert not sender.is_alive()
        want = collections.Counter(sender.acknowledged)
        all_delivered(capture, want, 150)
        wait_until(lambda: queue_drained(spool), 60, what="empty queue")
        got, dup = report("outages", capture, sender)
        assert set(got) == set(want), "nothing acknowledged lost, nothing invented"
        assert to_table.dropped() and to_relays.dropped() and to_ingress.dropped(), "the outages were real"
        assert sender.refusals > 0, "the ingress refused while S3/SQS were away (and the client sent again)"
        logs = "".join(w.log_text() for w in workers)
        assert "state table unreachable" in logs
        assert spool.counts(dlq=True) == {"visible": 0, "in_flight": 0, "delayed": 0}
        assert dup == {}, "no worker died: no duplicate"
    finally:
        for p in (to_ingress, to_relays, to_table):
            p.close()
