"""What the relay asks of S3 and SQS, counted on the wire, and how it rides out an outage.

Each program's AWS_ENDPOINT_URL points at its own recording proxy in front of LocalStack
(tests/aws_proxy.py): LocalStack's request log is shared by every test on the machine and does
not name the bucket, so the counts are taken per program here (tests/bench_relay.sh reads a
private LocalStack's log for the per-message figures).
"""

import json
import time

import pytest

from aws_proxy import AwsProxy
from harness import message_key, new_ulid, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_relayctl_e2e import send

SENDER = "alice@example.org"
OUTAGE_S = 20


@pytest.fixture
def proxy():
    made = []

    def start():
        p = AwsProxy()
        made.append(p)
        return p

    yield start
    for p in made:
        p.close()


def s3_ops(proxy):
    """The S3 operations of the spool's jobs: MTA-STS policy reads (a recipient domain's cached
    policy, once per domain while the relay runs) are the policy cache's, left out."""
    with proxy._lock:
        return [op for op, path, status in proxy.requests
                if status != "dropped" and op.startswith("s3.") and "/mta-sts/" not in path]


def drained(spool):
    return spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}


def relay_env(spool, dns, port, **extra):
    return {**spool.env, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port),
            "RELAY_HELO_NAME": "relay.example.test", "RELAY_POLL_WAIT": "1s", "RELAY_RETRY_SCHEDULE": "1h", **extra}


def test_first_attempt_path_makes_no_put_and_a_duplicate_after_completion_sends_nothing(
        ingress, dns_server, capture_server, loopback_hosts, spool, start_process, proxy):  # noqa: F811
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    to_ingress, to_relay = proxy(), proxy()
    server = ingress(AWS_ENDPOINT_URL=to_ingress.url)
    qid = send(server, ["bob@example.test"])
    assert to_ingress.ops() == ["s3.PutObject", "sqs.SendMessageBatch"], "ingress: one PUT, one batch send"
    [job] = spool.receive_jobs()
    assert (job["v"], job["jobs"], len(job["job_id"])) == (2, 1, 26)

    relay = start_process("relay", "poll", env=relay_env(spool, dns, port, AWS_ENDPOINT_URL=to_relay.url))
    mx.wait_for(1, timeout=60)
    wait_until(lambda: drained(spool) and "sqs.DeleteMessageBatch" in to_relay.ops(), 30, what="job acknowledged")
    assert s3_ops(to_relay) == ["s3.GetObject", "s3.GetObject", "s3.DeleteObject"], \
        "state GET (404), message GET, free DELETE — no PUT, no HEAD"
    assert not [o for o in to_relay.ops("sqs.") if o.startswith("sqs.Send")], "nothing re-enqueued"
    assert spool.keys("state/") == [] and message_key(qid) not in spool.keys("spool/")

    # SQS delivers the job again after completion: nothing is sent, nothing written.
    to_relay.clear()
    spool.send_job(job)
    relay.wait_log(r"already completed \(message deleted\)", timeout=30)
    wait_until(lambda: drained(spool), 30, what="duplicate acknowledged")
    time.sleep(1)
    assert len(mx.messages()) == 1
    assert s3_ops(to_relay) == ["s3.GetObject", "s3.GetObject"]
    assert [o for o in to_relay.ops() if o in ("s3.PutObject", "sqs.SendMessage", "sqs.SendMessageBatch")] == []


def make_job(spool, rcpts):
    qid = new_ulid()
    key = message_key(qid)
    spool.put(key, b"Subject: outage\r\n\r\nhello\r\n")
    return {"v": 2, "job_id": new_ulid(), "jobs": 1, "queue_id": qid, "message_key": key, "sender": SENDER,
            "domain": "example.test", "recipients": [{"address": r} for r in rcpts], "attempt": 0,
            "first_seen": int(time.time()), "not_before": 0, "size": 24}


@pytest.mark.parametrize("case", ["completion by delete", "state write and retry send"])
def test_an_s3_sqs_outage_right_after_the_remote_250_costs_no_duplicate(
        case, dns_server, capture_server, loopback_hosts, spool, start_process, proxy):
    (ip,), port = loopback_hosts(1)
    deferral = case != "completion by delete"
    mx = capture_server(ip, port, {"later@example.test": "450 4.2.0 try later"} if deferral else {})
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    rcpts = ["bob@example.test", "later@example.test"] if deferral else ["bob@example.test"]
    job = make_job(spool, rcpts)
    aws = proxy()
    # S3 and SQS go away for OUTAGE_S right after the relay has fetched the message.
    aws.outage_after(lambda op, path, status: op == "s3.GetObject" and "/spool/" in path and status == 200, OUTAGE_S)
    spool.send_job(job)
    relay = start_process("relay", "poll", env=relay_env(spool, dns, port, AWS_ENDPOINT_URL=aws.url))
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_tos"] == ["bob@example.test"]
    relay.wait_log(r"store call failed after delivery; retrying", timeout=30)
    assert aws.is_down()

    if deferral:
        state = wait_until(lambda: spool.keys("state/") and json.loads(spool.get(spool.keys("state/")[0])),
                           OUTAGE_S + 40, what="state written after the outage")
        assert [(r["address"], r["state"]) for r in state["recipients"]] == \
            [("bob@example.test", "sent"), ("later@example.test", "deferred")]
        waiting = wait_until(lambda: [m["job"] for m in spool.peek() if m["job"]["job_id"] != job["job_id"]],
                             30, what="retry job sent after the outage")
        assert [j["job_id"] for j in waiting] == [state["job_id"]]
    else:
        wait_until(lambda: job["message_key"] not in spool.keys("spool/"), OUTAGE_S + 40, what="completion marker")
    wait_until(lambda: [m for m in spool.peek() if m["job"]["job_id"] == job["job_id"]] == [], 30,
               what="the job acknowledged, not given back")
    assert aws.dropped(), "the outage was real"
    assert "SQS will redeliver" not in relay.log_text()
    assert len(mx.messages()) == 1, "delivered once"
