"""Operating the relay, end to end over real parts: delivery events read back from a LocalStack
queue with boto3, the EMF metrics both programs print on stdout, the ingress container's health
check, and the relay under a real Lambda runtime emulator (`cargo lambda watch`).
"""

import json
import os
import shutil
import smtplib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness import wait_until
from test_relay_e2e import MESSAGE, SENDER, enqueue, mail_world, queue_drained, start_relay  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def events_queue(aws):
    """A fresh events queue: .url, .receive_all(n, timeout) -> parsed events."""
    url = aws.sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]

    class Events:
        def __init__(self):
            self.url, self.seen = url, []

        def receive(self):
            out = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in out.get("Messages", []):
                self.seen.append(json.loads(m["Body"]))
                aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            return self.seen

        def wait_for(self, n, timeout=60):
            return wait_until(lambda: len(self.receive()) >= n and self.seen, timeout, what=f"{n} events")

    yield Events()
    aws.sqs.delete_queue(QueueUrl=url)


def emf_lines(process):
    """Every stdout line, parsed; fails unless each one is an EMF object."""
    lines = [json.loads(line) for line in process.stdout_text().splitlines()]
    for line in lines:
        directive = line["_aws"]["CloudWatchMetrics"][0]
        # Service, and for a counter by dimension (AuthChecked by Result) that one too.
        [dimensions] = directive["Dimensions"]
        assert directive["Namespace"] and dimensions[0] == "Service" and len(dimensions) <= 2, line
        assert all(d in line for d in dimensions), line
        for metric in directive["Metrics"]:
            assert metric["Name"] in line, (metric, line)
    return lines


def totals(lines, *names):
    return {n: sum(line.get(n, 0) for line in lines) for n in names}


def by_type(events, kind, recipient):
    key = {"Delivery": ("delivery", "recipients"), "Bounce": ("bounce", "bouncedRecipients"),
           "DeliveryDelay": ("deliveryDelay", "delayedRecipients")}[kind]
    found = []
    for e in events:
        if e["eventType"] != kind:
            continue
        rcpts = e[key[0]][key[1]]
        addrs = [r if isinstance(r, str) else r["emailAddress"] for r in rcpts]
        if recipient in addrs:
            found.append(e)
    return found


# ---------------------------------------------------------------------------------------------


def test_events_and_metrics_of_a_delivered_a_deferred_and_a_bounced_recipient(
        mail_world, spool, start_process, events_queue):
    mx, sender_mx, dns, port = mail_world({
        "later@example.test#1": "450 4.2.0 try later",
        "no@example.test": "550 5.1.1 no such user",
    })
    job = enqueue(spool, "example.test", ["ok@example.test", "later@example.test", "no@example.test"])
    relay = start_process("relay", "poll", split_stdout=True, env={
        **spool.env, "RELAY_MX_PORT": str(port), "RELAY_HELO_NAME": "relay.example.test", "RELAY_POLL_WAIT": "1s",
        "RELAY_RETRY_SCHEDULE": "1s", "RELAY_DNS_SERVERS": str(dns), "RELAY_EVENTS_QUEUE_URL": events_queue.url,
        "METRICS_NAMESPACE": "SmtpRelayTest",
    })
    mx.wait_for(2, timeout=60)
    sender_mx.wait_for(1, timeout=60)  # the bounce, itself delivered as mail from <>
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    events = events_queue.wait_for(5)
    qid = job["queue_id"]

    [ok] = by_type(events, "Delivery", "ok@example.test")
    assert ok["mail"]["messageId"] == qid and ok["mail"]["source"] == SENDER
    assert ok["mail"]["destination"] == ["ok@example.test", "later@example.test", "no@example.test"]
    assert ok["mail"]["sourceIp"] == "192.0.2.1"
    assert ok["mail"]["timestamp"].endswith("Z") and ok["delivery"]["timestamp"].endswith("Z")
    assert ok["delivery"]["smtpResponse"].startswith("250 ")
    assert ok["delivery"]["remoteMtaIp"] == mx.ip
    assert ok["delivery"]["reportingMTA"] == "relay.example.test"
    assert 0 <= ok["delivery"]["processingTimeMillis"] < 60_000

    [delay] = by_type(events, "DeliveryDelay", "later@example.test")
    [later] = delay["deliveryDelay"]["delayedRecipients"]
    assert (later["status"], later["diagnosticCode"]) == ("4.2.0", "smtp; 450 4.2.0 try later")
    assert delay["deliveryDelay"]["delayType"] == "RecipientServerError"
    assert delay["deliveryDelay"]["expirationTime"] > delay["deliveryDelay"]["timestamp"]
    [retried] = by_type(events, "Delivery", "later@example.test")
    assert retried["mail"]["messageId"] == qid

    [bounce] = by_type(events, "Bounce", "no@example.test")
    assert bounce["bounce"]["bounceType"] == "Permanent" and bounce["bounce"]["bounceSubType"] == "NoEmail"
    [no] = bounce["bounce"]["bouncedRecipients"]
    assert (no["status"], no["diagnosticCode"], no["action"]) == ("5.1.1", "smtp; 550 5.1.1 no such user", "failed")

    [dsn] = by_type(events, "Delivery", SENDER)
    assert dsn["mail"]["source"] == "" and dsn["mail"]["messageId"] != qid, "the DSN is mail of its own"
    assert len(events_queue.receive()) == 5, "one event per outcome, none twice"

    assert relay.stop() == 0
    lines = emf_lines(relay)
    assert {line["_aws"]["CloudWatchMetrics"][0]["Namespace"] for line in lines} == {"SmtpRelayTest"}
    assert {line["Service"] for line in lines} == {"relay"}
    assert totals(lines, "Sent", "Deferred", "Bounced") == {"Sent": 3, "Deferred": 1, "Bounced": 1}
    delays = [d for line in lines for d in line.get("DeliveryDelay", [])]
    assert len(delays) == 3 and all(0 <= d < 60 for d in delays), delays
    assert "_aws" not in relay.log_text(), "metrics never reach the log stream (stderr)"


def test_an_events_queue_that_does_not_exist_leaves_delivery_unaffected(mail_world, spool, start_process, aws):
    mx, _, dns, port = mail_world()
    job = enqueue(spool, "example.test", ["bob@example.test"])
    missing = f"{aws.endpoint}/000000000000/no-such-events-queue-{uuid.uuid4().hex[:8]}"
    relay = start_relay(start_process, spool, dns, port, RELAY_EVENTS_QUEUE_URL=missing)
    [m] = mx.wait_for(1, timeout=60)
    assert m["data"] == MESSAGE
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    failure = relay.wait_log(r'"delivery events not published".*', timeout=20).group(0)
    assert job["queue_id"] in failure and "NonExistentQueue" in failure, failure
    wait_until(lambda: job["message_key"] not in spool.keys("spool/"), 10, what="completed: message deleted")
    assert spool.keys("state/") == [], "a first-attempt completion leaves no state"
    assert len(mx.messages()) == 1, "the job was not repeated"
    assert "job failed" not in relay.log_text()


def test_ingress_metrics_count_queued_refused_and_temporarily_refused_mail(start_process, spool, free_port):
    port = free_port()
    ingress = start_process("ingress", split_stdout=True, wait_port=("127.0.0.1", port), env={
        **spool.env, "INGRESS_LISTEN": f"127.0.0.1:{port}", "INGRESS_HOSTNAME": "mx.ingress.test",
        "RELAY_DOMAINS": "example.test",
    })
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.org")
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.rcpt("someone@elsewhere.example")[0] == 554          # Rejected
        code, reply = c.data(b"Subject: metrics\r\n\r\ncounted\r\n")
        assert code == 250 and b"queued as" in reply                  # Accepted
        assert c.mail(SENDER)[0] == 250
        codes = [c.rcpt(f"r{i}@example.test")[0] for i in range(101)]
        assert codes == [250] * 100 + [452]                           # TempFailed
        c.rset()
        c.noop()
        c.docmd("FOO")                                                # not counted
    assert ingress.stop() == 0
    lines = emf_lines(ingress)
    assert {line["Service"] for line in lines} == {"ingress"}
    assert {line["_aws"]["CloudWatchMetrics"][0]["Namespace"] for line in lines} == {"SmtpRelay"}
    assert totals(lines, "Accepted", "Rejected", "TempFailed") == {"Accepted": 1, "Rejected": 1, "TempFailed": 1}
    # The one message came from an untrusted client and was judged: no DMARC record anywhere.
    judged = {line["Result"]: line["AuthChecked"] for line in lines if "AuthChecked" in line}
    assert judged == {"pass": 0, "fail": 0, "none": 1, "temperror": 0}, judged


def test_ingress_health_check_greets_through_the_proxy_protocol_and_fails_when_down(start_process, spool, free_port):
    port = free_port()
    settings = {**spool.env, "INGRESS_LISTEN": f"0.0.0.0:{port}", "INGRESS_HOSTNAME": "mx.ingress.test",
                "INGRESS_PROXY_PROTOCOL": "true"}
    ingress = start_process("ingress", split_stdout=True, wait_port=("127.0.0.1", port), env=settings)
    health = start_process("ingress", "health", env=settings, name="health")
    assert health.wait(30) == 0, health.log_text()
    assert "ok: 220 mx.ingress.test ESMTP ready" in health.log_text()
    assert ingress.stop() == 0
    assert ingress.stdout_text() == "", "a health check is not mail: nothing counted"
    down = start_process("ingress", "health", env=settings, name="health-down")
    assert down.wait(30) == 1
    assert "unhealthy: connect" in down.log_text()


# ---------------------------------------------------------------------------------------------
# The Lambda under cargo lambda's runtime emulator.


def cargo_lambda():
    """cargo-lambda from the test venv (infra/local/requirements.txt), or from PATH."""
    venv = Path(sys.executable).parent / "cargo-lambda"
    found = str(venv) if venv.exists() else shutil.which("cargo-lambda")
    if not found:
        pytest.fail("cargo-lambda is not installed: run infra/local/setup.sh", pytrace=False)
    return found


def test_relay_under_cargo_lambda_watch_delivers_the_sample_event(
        dns_server, capture_server, loopback_hosts, spool, start_process, free_port):
    """`cargo lambda watch --only-lambda-apis` is cargo lambda's Lambda emulator (Runtime API and
    invoke API) without its `cargo run`, so the relay binary ./tests/run already built runs
    under it as is: no second compile. `cargo lambda invoke --data-file events/sqs-job.json`
    sends the repository's sample SQS event; its job is delivered to an MX on loopback."""
    sample = json.loads((ROOT / "events" / "sqs-job.json").read_text())
    job = json.loads(sample["Records"][0]["body"])
    message = (ROOT / "events" / "message.eml").read_bytes()
    spool.put(job["message_key"], message)
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server(f"{job['domain']}. MX 10 mx.{job['domain']}.", f"mx.{job['domain']}. A {ip}")

    home = Path.home()
    toolchain = {"CARGO_HOME": os.environ.get("CARGO_HOME", str(home / ".cargo")),
                 "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(home / ".rustup"))}
    api = free_port()
    emulator = start_process(cargo_lambda(), "lambda", "watch", "--only-lambda-apis",
                             "--manifest-path", ROOT / "functions" / "relay" / "Cargo.toml",
                             "-A", "127.0.0.1", "-P", str(api), env=toolchain, name="cargo-lambda-watch",
                             wait_port=("127.0.0.1", api), timeout=60)
    runtime = emulator.wait_log(r"AWS_LAMBDA_RUNTIME_API=(\S+)").group(1)
    relay = start_process("relay", split_stdout=True, name="relay-lambda", env={
        **spool.env, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port), "RELAY_HELO_NAME": "relay.example.test",
        "AWS_LAMBDA_RUNTIME_API": runtime, "AWS_LAMBDA_FUNCTION_NAME": "_",
        "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    })
    invoke = subprocess.run(
        [cargo_lambda(), "lambda", "invoke", "-A", "127.0.0.1", "-P", str(api), "--output-format", "json",
         "--data-file", str(ROOT / "events" / "sqs-job.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, **toolchain})
    assert invoke.returncode == 0, invoke.stdout + invoke.stderr + relay.log_text()
    assert json.loads(invoke.stdout) == {"batchItemFailures": []}
    [m] = mx.wait_for(1, timeout=10)
    assert (m["mail_from"], m["rcpt_tos"]) == (job["sender"], [r["address"] for r in job["recipients"]])
    assert m["data"] == message
    assert spool.keys("spool/") == [] and spool.keys("state/") == [], "completed by deleting its message"
    # Flushed at the end of the invocation, while the function waits for the next one.
    lines = wait_until(lambda: emf_lines(relay), 10, what="metrics after the invocation")
    assert totals(lines, "Sent", "Deferred", "Bounced") == {"Sent": 1, "Deferred": 0, "Bounced": 0}
    assert relay.alive(), "the function keeps waiting for invocations"
