"""relayctl end to end: mail sent through the ingress (curl/smtplib clients), delivered by
`relay poll` to capture servers via a real DNS server, the spool on LocalStack; relayctl run as a
subprocess, its human and --json output checked at each stage.
"""

import json
import os
import pty
import re
import select
import smtplib
import subprocess
import time

import pytest

from harness import BIN_DIR, TRANSPARENCY_MESSAGE, message_key, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)

SENDER = "alice@example.org"
HOUR_SCHEDULE = "1h"  # retries far away: only `relayctl retry` brings them on


def relayctl(spool, *args, env=None, check=True, stdin=subprocess.DEVNULL):
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **spool.env,
            "RELAY_HELO_NAME": "relay.example.test", "AWS_EC2_METADATA_DISABLED": "true", **(env or {})}
    out = subprocess.run([str(BIN_DIR / "relayctl"), *args], env={k: v for k, v in full.items() if v is not None},
                         capture_output=True, timeout=60, stdin=stdin)
    if check:
        assert out.returncode == 0, (args, out.returncode, out.stderr.decode())
    return out


def ctl_json(spool, *args):
    out = relayctl(spool, *args, "--json")
    text = out.stdout.decode()
    assert text.count("\n") == 1, f"one JSON object on one line: {text!r}"
    return json.loads(text)


def send(server, rcpts, body=TRANSPARENCY_MESSAGE):
    """Submit with smtplib; returns the queue id from `250 ... queued as <id>`."""
    with smtplib.SMTP(*server.mta, timeout=60) as c:
        c.ehlo("client.example.org")
        c.mail(SENDER)
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        code, text = c.data(body)
        assert code == 250, text
    return re.search(rb"queued as ([0-9A-Z]{26})", text).group(1).decode()


@pytest.fixture
def world(ingress, dns_server, capture_server, loopback_hosts, spool, start_process):  # noqa: F811
    """ingress + the MX of example.test (replies as given) + the sender's MX + `relay poll`."""

    def build(replies=(), start=True, **relay_env):
        (ip_mx, ip_sender), port = loopback_hosts(2)
        mx, sender_mx = capture_server(ip_mx, port, replies), capture_server(ip_sender, port)
        dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                         "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
        server = ingress()
        env = {**spool.env, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port),
               "RELAY_HELO_NAME": "relay.example.test", "RELAY_POLL_WAIT": "1s",
               "RELAY_RETRY_SCHEDULE": HOUR_SCHEDULE, **relay_env}

        def relay():
            p = start_process("relay", "poll", env=env)
            p.wait_log(r'"polling"', timeout=20)
            return p

        return server, mx, sender_mx, (relay() if start else relay)

    return build


def by_address(trace):
    return {r["address"]: r for r in trace["recipients"]}


def expected_job(spool, qid, domain="example.test"):
    """The job waiting in the queue (delayed) that the message's state expects next."""
    state = json.loads(spool.get(f"state/{qid}/{domain}.json"))
    jobs = [m["job"] for m in spool.peek() if m["job"] and m["job"].get("job_id") == state["job_id"]]
    assert len(jobs) == 1, (state["job_id"], spool.peek())
    return jobs[0]


def arrived(job):
    """The job as it is when its time has come (SQS hands it over once its delay is over)."""
    return {**job, "not_before": int(time.time())}


def test_trace_follows_sent_twice_deferred_and_bounced_recipients_and_retry_brings_them_forward(world, spool):
    server, mx, sender_mx, relay = world({"later@example.test#2": "450 4.2.0 try later",
                                          "no@example.test": "550 5.1.1 no such user"}, start=False)
    rcpts = ["ok@example.test", "later@example.test", "no@example.test"]
    qid = send(server, rcpts)
    stored = spool.get(message_key(qid))

    # Stage 0: nobody has touched it; the ingress's metadata is enough.
    t = ctl_json(spool, "trace", qid)
    assert (t["queue_id"], t["sender"], t["size"]) == (qid, SENDER, len(stored))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["received"]), t
    assert [(r["address"], r["state"], r["attempts"]) for r in t["recipients"]] == [(r, "queued", 0) for r in rcpts]
    assert set(t["recipients"][0]) == {"address", "state", "attempts", "last_reply", "remote", "next_attempt", "updated"}
    human = relayctl(spool, "trace", qid).stdout.decode()
    assert qid in human and f"<{SENDER}>" in human and "\x1b[" not in human, human
    assert all(re.search(rf"^\s*{re.escape(r)}\s+queued\s+0\s", human, re.M) for r in rcpts), human
    assert relayctl(spool, "show", qid).stdout == stored, "show: the stored bytes, exactly"

    # Stage 1: first attempt — sent, deferred, bounced.
    relay()
    bounce = sender_mx.wait_for(1, timeout=60)[0]["data"].decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; no@example.test" in bounce
    t = wait_until(lambda: (t := ctl_json(spool, "trace", qid)) and by_address(t)["later@example.test"]["attempts"] == 1 and t,
                   30, what="first attempt in the trace")
    r = by_address(t)
    assert (r["ok@example.test"]["state"], r["later@example.test"]["state"], r["no@example.test"]["state"]) == \
        ("sent", "deferred", "bounced")
    assert r["later@example.test"]["last_reply"] == "450 4.2.0 try later"
    assert r["no@example.test"]["last_reply"] == "550 5.1.1 no such user"
    assert r["ok@example.test"]["remote"] == f"mx.example.test [{mx.ip}:{mx.port}]"
    assert r["later@example.test"]["next_attempt"] > t["received"], "an hour away"
    human = relayctl(spool, "trace", qid).stdout.decode()
    assert re.search(r"later@example\.test\s+deferred\s+1\s+in (59m|1h)\s", human), human
    assert re.search(r"no@example\.test\s+bounced\s+1\s+-\s", human) and "550 5.1.1 no such user" in human, human

    # Stage 2 and 3: `retry` brings the deferred recipient forward, twice.
    for attempt, state in ((2, "deferred"), (3, "sent")):
        waiting = expected_job(spool, qid)
        assert [r["address"] for r in waiting["recipients"]] == ["later@example.test"], waiting
        assert ctl_json(spool, "retry", qid) == {"queue_id": qid, "retried": ["later@example.test"]}
        t = wait_until(lambda: (t := ctl_json(spool, "trace", qid)) and by_address(t)["later@example.test"]["attempts"] == attempt and t,
                       30, what=f"attempt {attempt}")
        assert by_address(t)["later@example.test"]["state"] == state
        superseded = waiting
    assert [m["rcpt_tos"] for m in mx.messages()] == [["ok@example.test"], ["later@example.test"]]
    human = relayctl(spool, "trace", qid).stdout.decode()
    assert re.search(r"later@example\.test\s+sent\s+3\s", human), human

    # Completed: the sole job deleted its message; show and trace still find it (versioning).
    wait_until(lambda: message_key(qid) not in spool.keys("spool/"), 30, what="message deleted on completion")
    assert relayctl(spool, "show", qid).stdout == stored == mx.messages()[0]["data"]
    assert ctl_json(spool, "trace", qid)["completed"] is not None
    assert ctl_json(spool, "retry", qid)["retried"] == [], "nothing deferred any more"

    # The retry copies that were waiting in SQS, once due, deliver nothing: they were superseded.
    spool.purge()
    time.sleep(1)
    spool.send_job(arrived(superseded))
    wait_until(lambda: spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}, 30, what="copy handled")
    time.sleep(1)
    assert len(mx.messages()) == 2, "no recipient delivered twice"


def test_cancel_stops_a_deferred_recipient_and_bounce_tells_the_sender(world, spool):
    server, mx, sender_mx, _ = world({"later@example.test": "450 4.2.0 try later"})
    qid = send(server, ["ok@example.test", "later@example.test"])
    wait_until(lambda: by_address(ctl_json(spool, "trace", qid))["later@example.test"]["state"] == "deferred", 60,
               what="deferred")
    waiting = expected_job(spool, qid)
    out = ctl_json(spool, "cancel", qid, "--bounce")
    assert out["cancelled"] == ["later@example.test"] and out["bounce_queue_id"], out
    r = by_address(ctl_json(spool, "trace", qid))
    assert (r["ok@example.test"]["state"], r["later@example.test"]["state"]) == ("sent", "cancelled")
    dsn = sender_mx.wait_for(1, timeout=60)[0]
    text = dsn["data"].decode("utf-8", "replace")
    assert dsn["rcpt_tos"] == [SENDER] and dsn["mail_from"] in ("", "<>")
    for f in ("Final-Recipient: rfc822; later@example.test", "Action: failed", "Status: 5.0.0",
              "delivery cancelled by the administrator", "Reporting-MTA: dns; relay.example.test"):
        assert f in text, f"{f!r} missing in\n{text}"
    assert "ok@example.test" not in text.split("message/delivery-status")[1].split("\n\n--")[0]
    assert relayctl(spool, "cancel", qid).stdout.decode().strip() == f"{qid}: nothing pending to cancel"

    # The retry job that was waiting arrives later and delivers nothing.
    spool.purge()
    time.sleep(1)
    rcpt_events = lambda: [e for e in mx.events() if e.get("event") == "rcpt" and "later@" in str(e)]  # noqa: E731
    before = len(rcpt_events())
    spool.send_job(arrived(waiting))
    wait_until(lambda: spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}, 30, what="job handled")
    time.sleep(1)
    assert len(rcpt_events()) == before, "a cancelled recipient gets no further attempt"


def test_queue_counts_and_redrive_bring_a_dead_lettered_job_back(world, spool):
    server, mx, _, relay = world(start=False)
    qid = send(server, ["bob@example.test"])
    [m] = spool.sqs.receive_message(QueueUrl=spool.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=5)["Messages"]
    spool.sqs.send_message(QueueUrl=spool.dlq_url, MessageBody=m["Body"])
    spool.sqs.delete_message(QueueUrl=spool.queue_url, ReceiptHandle=m["ReceiptHandle"])
    q = ctl_json(spool, "queue")
    assert {k: q[k] for k in ("queued", "in_flight", "delayed", "dlq")} == {"queued": 0, "in_flight": 0, "delayed": 0, "dlq": 1}
    assert q["oldest_queue_id"] == qid and 0 <= q["oldest_age_s"] < 60, q
    human = relayctl(spool, "queue").stdout.decode()
    assert re.search(r"dead-letter\s+1", human) and re.search(rf"oldest\s+\d+s \({qid}\)", human), human

    assert ctl_json(spool, "redrive") == {"moved": 1}
    q = ctl_json(spool, "queue")
    assert (q["dlq"], q["queued"] + q["in_flight"]) == (0, 1), q
    relay()
    [delivered] = mx.wait_for(1, timeout=60)
    assert delivered["rcpt_tos"] == ["bob@example.test"]
    wait_until(lambda: ctl_json(spool, "queue")["oldest_age_s"] is None, 30, what="nothing pending")


def run_on_pty(cmd, env):
    """Run cmd with its stdout on a pseudo-terminal; returns what it printed."""
    main, sub = pty.openpty()
    p = subprocess.Popen(cmd, env=env, stdout=sub, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(sub)
    out = b""
    while True:
        r, _, _ = select.select([main], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=30)
    os.close(main)
    return out.decode()


def test_errors_colour_and_a_closed_pipe(world, spool):
    server, _, _, _ = world(start=False)
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    qid = send(server, ["bob@example.test"], big * 2000)

    missing = relayctl(spool, "trace", "01JD0000000000000000000000", check=False)
    assert missing.returncode == 1 and b"no message with queue id" in missing.stderr and missing.stdout == b""
    bad = relayctl(spool, "show", "../etc/passwd", check=False)
    assert bad.returncode == 2 and b"not a queue id" in bad.stderr
    unset = relayctl(spool, "queue", env={"SPOOL_BUCKET": None}, check=False)
    assert unset.returncode == 2 and b"SPOOL_BUCKET" in unset.stderr

    env = {"PATH": os.environ["PATH"], **spool.env, "RELAY_HELO_NAME": "relay.example.test"}
    cmd = [str(BIN_DIR / "relayctl"), "trace", qid]
    assert "\x1b[" in run_on_pty(cmd, env), "colour on a terminal"
    assert "\x1b[" not in run_on_pty(cmd, {**env, "NO_COLOR": "1"}), "never with NO_COLOR"

    # `relayctl show | head`: the reader goes away after a few bytes; relayctl ends quietly.
    p = subprocess.Popen([str(BIN_DIR / "relayctl"), "show", qid], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    # The client is untrusted: the ingress judged the message, and its results come first.
    assert p.stdout.read(24) == b"Authentication-Results: "
    p.stdout.close()
    assert p.wait(timeout=30) == 0
    assert p.stderr.read() == b"", "no error message for a closed pipe"
