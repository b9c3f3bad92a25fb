"""Sender reputation end to end over real parts: the ingress (mail from RELAY_NETWORKS, so it is
mail of our own) and `relay poll` on LocalStack, the state table on moto's DynamoDB server, the
test DNS server, aiosmtpd capture servers as the recipients' MX (answering `550 5.1.1` where a
test says so) and as the sender's mailbox, events read back from an SQS queue, relayctl as a
subprocess. Reports are built with Python's `email` package — a DSN's per-recipient blocks as
the package itself models them, an ARF report by RFC 5965 — and sent with smtplib.
"""

import email
import email.policy
import email.utils
import hashlib
import hmac
import json
import os
import re
import smtplib
import subprocess
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from harness import BIN_DIR, new_ulid, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_observe_e2e import events_queue  # noqa: F401  (fixture)

SENDER = "alice@example.org"
FB = "fb.example.org"
BODY = (b"From: Alice <alice@example.org>\r\nTo: someone@example.test\r\nSubject: news\r\n"
        b"Message-ID: <n1@example.org>\r\n\r\nHello.\r\n")


class World:
    def __init__(self, server, mx, sender_mx, relay, events):
        self.server, self.mx, self.sender_mx, self.relay, self.events = server, mx, sender_mx, relay, events

    def send(self, rcpts, body=BODY):
        """Mail from alice through the ingress; the queue id."""
        with smtplib.SMTP(*self.server.mta, timeout=60) as c:
            c.ehlo("client.example.org")
            c.mail(SENDER)
            for r in rcpts:
                assert c.rcpt(r)[0] == 250, r
            code, text = c.data(body)
            assert code == 250, text
        return re.search(rb"queued as ([0-9A-Z]{26})", text).group(1).decode()

    def report(self, to, message, sender=""):
        """Send a report to the ingress; the reply to its data."""
        with smtplib.SMTP(*self.server.mta, timeout=60) as c:
            c.ehlo("mx.example.test")
            c.mail(sender)
            code, text = c.rcpt(to)
            assert code == 250, (to, code, text)
            return c.data(message)

    def rcpts_seen(self, address):
        """How many times the recipients' MX was asked RCPT TO this address."""
        return sum(1 for e in self.mx.events() if e["event"] == "rcpt" and e["rcpt"].lower() == address.lower())


@pytest.fixture
def rep(ingress, dns_server, capture_server, loopback_hosts, spool, start_process, state_table,  # noqa: F811
        events_queue):  # noqa: F811
    """rep(replies={...}, table=True) -> World: ingress + relay with FEEDBACK_DOMAIN and the state
    table (unless table=False), example.test's MX and alice's (example.org's) MX."""

    def build(replies=(), table=True):
        (ip_mx, ip_sender), port = loopback_hosts(2)
        mx, sender_mx = capture_server(ip_mx, port, replies), capture_server(ip_sender, port)
        dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                         "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
        common = {"FEEDBACK_DOMAIN": FB, "RELAY_EVENTS_QUEUE_URL": events_queue.url,
                  **(state_table.env if table else {})}
        server = ingress(relay_domains="inbound.test", RELAY_NETWORKS="127.0.0.0/8", **common)
        relay = start_process("relay", "poll", env={
            **spool.env, **common, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port),
            "RELAY_HELO_NAME": "relay.example.test", "RELAY_POLL_WAIT": "1s", "RELAY_RETRY_SCHEDULE": "1h"})
        relay.wait_log(r'"polling"', timeout=20)
        return World(server, mx, sender_mx, relay, events_queue)

    return build


def relayctl(spool, state_table, *args, check=True):
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **spool.env, **state_table.env,
           "AWS_EC2_METADATA_DISABLED": "true"}
    out = subprocess.run([str(BIN_DIR / "relayctl"), *args], env=env, capture_output=True, timeout=60)
    if check:
        assert out.returncode == 0, (args, out.returncode, out.stderr.decode())
    return out


def ctl_json(spool, state_table, *args):
    text = relayctl(spool, state_table, *args, "--json").stdout.decode()
    assert text.count("\n") == 1, f"one JSON object on one line: {text[:300]!r}"
    return json.loads(text)


def suppressed(state_table):
    """The suppression items, by sort key (the lower-cased address)."""
    return {i["sk"]["S"]: i for i in state_table.items() if i["pk"]["S"] == "suppressed"}


def events_of(world, kind, n=1):
    """Wait for n events of this type; all of them."""
    def found():
        got = [e for e in world.events.receive() if e["eventType"] == kind]
        return len(got) >= n and got
    return wait_until(found, 60, what=f"{n} {kind} event(s)")


# --------------------------------------------------------------------------- reports, by the book

def returned_part(original, headers_only):
    if headers_only:
        head = original.split(b"\r\n\r\n", 1)[0].decode()
        return MIMEText(head + "\r\n", "rfc822-headers")
    part = Message()
    part["Content-Type"] = "message/rfc822"
    part.set_payload([email.message_from_bytes(original)])
    return part


def dsn(return_path, recipient, original, status="5.1.1", diagnostic="smtp; 550 5.1.1 <{r}>: no such user",
        headers_only=False):
    """An RFC 3464 report from mx.example.test as a server that accepted the message and then
    failed to deliver it sends it: human part, message/delivery-status, the returned message."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.test>"
    report["To"] = return_path
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(MIMEText("Your message could not be delivered to one or more recipients.\n"))
    status_part = Message()
    status_part["Content-Type"] = "message/delivery-status"
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.example.test"
    per_message["Arrival-Date"] = email.utils.formatdate()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = "dns; mailstore.example.test"
    per_recipient["Diagnostic-Code"] = diagnostic.format(r=recipient)
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    report.attach(returned_part(original, headers_only))
    return report.as_bytes(policy=email.policy.SMTP)


def arf(original, feedback_type="abuse", rcpt_to=None):
    """An RFC 5965 report as a mailbox provider's feedback loop sends it."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Feedback Loop <fbl@isp.example.test>"
    report["To"] = f"fbl@{FB}"
    report["Subject"] = "Complaint about a message from example.org"
    report.attach(MIMEText("This is an email abuse report for a message received from 192.0.2.25.\n"))
    fields = [f"Feedback-Type: {feedback_type}", "User-Agent: ExampleFBL/2.1", "Version: 1",
              f"Arrival-Date: {email.utils.formatdate()}", "Source-IP: 192.0.2.25", "Reported-Domain: example.org"]
    if rcpt_to:
        fields.append(f"Original-Rcpt-To: <{rcpt_to}>")
    part = Message()
    part["Content-Type"] = "message/feedback-report"
    part.set_payload("\r\n".join(fields) + "\r\n")
    report.attach(part)
    report.attach(returned_part(original, headers_only=False))
    return report.as_bytes(policy=email.policy.SMTP)


def true_token(state_table, queue_id):
    """The feedback token of `queue_id` computed independently of the programs: the first 80
    bits of HMAC-SHA256 under the key in the state table (`feedback-key` item), as hex."""
    [item] = [i for i in state_table.items() if i["pk"]["S"] == "feedback-key"]
    mac = hmac.new(item["secret"]["B"], b"smtp-relay feedback token v1\0" + queue_id.upper().encode(), hashlib.sha256)
    return f"{queue_id.lower()}-{mac.digest()[:10].hex()}"


def received(world, n):
    """The n-th message the recipients' MX accepted (1-based), after waiting for it."""
    return world.mx.wait_for(n, timeout=60)[n - 1]


# --------------------------------------------------------------------------- the suppression list

def test_a_hard_bounce_suppresses_the_address_until_it_is_removed(rep, spool, state_table):
    w = rep(replies={"gone@example.test": "550 5.1.1 <gone@example.test>: Recipient address rejected: no such user"})
    q1 = w.send(["gone@example.test", "bob@example.test"])
    [dsn1] = w.sender_mx.wait_for(1, timeout=60)
    assert dsn1["mail_from"] in ("", "<>") and dsn1["rcpt_tos"] == [SENDER]
    assert b"Status: 5.1.1" in dsn1["data"]
    entry = wait_until(lambda: suppressed(state_table).get("gone@example.test"), 30, what="the suppression item")
    assert (entry["reason"]["S"], entry["queue_id"]["S"]) == ("bounce", q1)
    assert "550 5.1.1" in entry["diagnostic"]["S"]
    assert "bob@example.test" not in suppressed(state_table), "a delivered recipient is not listed"
    shown = ctl_json(spool, state_table, "suppress", "show", "GONE@Example.TEST")
    assert (shown["address"], shown["reason"], shown["queue_id"]) == ("gone@example.test", "bounce", q1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown["since"])

    # The next message to it (in another case) is not attempted: a DSN and an event say why.
    q2 = w.send(["Gone@example.test"])
    dsn2 = w.sender_mx.wait_for(2, timeout=60)[1]["data"].decode()
    assert "Status: 5.7.1" in dsn2 and "recipient is on the suppression list (bounce since" in dsn2, dsn2
    assert w.rcpts_seen("gone@example.test") == 1, "the second message never reached the MX for it"
    bounces = events_of(w, "Bounce", 2)
    ours = [e for e in bounces if e["mail"]["messageId"] == q2]
    assert [e["bounce"]["bounceSubType"] for e in ours] == ["OnAccountSuppressionList"]
    assert ours[0]["bounce"]["bouncedRecipients"][0]["status"] == "5.7.1"
    assert [e["bounce"]["bounceSubType"] for e in bounces if e["mail"]["messageId"] == q1] == ["NoEmail"]

    # Removed, it is attempted again.
    assert ctl_json(spool, state_table, "suppress", "remove", "gone@example.test") == {
        "address": "gone@example.test", "removed": True}
    assert relayctl(spool, state_table, "suppress", "show", "gone@example.test", check=False).returncode == 1
    w.send(["gone@example.test"])
    w.sender_mx.wait_for(3, timeout=60)
    assert w.rcpts_seen("gone@example.test") == 2


def test_relayctl_adds_lists_in_pages_shows_and_removes(rep, spool, state_table):
    w = rep()
    added = ctl_json(spool, state_table, "suppress", "add", "Carol@Example.test", "--reason", "complaint")
    assert (added["address"], added["reason"], added["queue_id"]) == ("Carol@Example.test", "complaint", None)
    q = w.send(["carol@example.test"])
    text = w.sender_mx.wait_for(1, timeout=60)[0]["data"].decode()
    assert "recipient is on the suppression list (complaint since" in text
    assert w.rcpts_seen("carol@example.test") == 0, "a manual entry keeps mail away too"
    assert [e["bounce"]["bounceSubType"] for e in events_of(w, "Bounce") if e["mail"]["messageId"] == q] == [
        "OnAccountSuppressionList"]

    # 1,200 more entries written as the documented item layout says: list pages through them all.
    items = [{"pk": {"S": "suppressed"}, "sk": {"S": a}, "address": {"S": a}, "reason": {"S": "bounce"},
              "since": {"N": "1800000000"}, "diagnostic": {"S": "imported"}}
             for a in (f"user{i:04d}@bulk.example.test" for i in range(1200))]
    for i in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]
        assert not state_table.client.batch_write_item(RequestItems={state_table.name: batch}).get("UnprocessedItems")
    everything = ctl_json(spool, state_table, "suppress", "list")["suppressed"]
    assert len(everything) == 1201
    addresses = [e["address"] for e in everything]
    assert addresses == sorted(addresses, key=str.lower) and addresses[0] == "Carol@Example.test"
    first = ctl_json(spool, state_table, "suppress", "list", "--limit", "100")
    assert len(first["suppressed"]) == 100 and first["next"] == "user0098@bulk.example.test"
    second = ctl_json(spool, state_table, "suppress", "list", "--limit", "100", "--after", first["next"])
    assert second["suppressed"][0]["address"] == "user0099@bulk.example.test" and len(second["suppressed"]) == 100
    table = relayctl(spool, state_table, "suppress", "list").stdout.decode().splitlines()
    assert table[0].split() == ["ADDRESS", "REASON", "SINCE", "QUEUE", "ID", "DIAGNOSTIC"] and len(table) == 1202

    missing = relayctl(spool, state_table, "suppress", "show", "nobody@example.test", check=False)
    assert missing.returncode == 1 and b"not on the suppression list" in missing.stderr
    assert ctl_json(spool, state_table, "suppress", "remove", "nobody@example.test")["removed"] is False
    bad = relayctl(spool, state_table, "suppress", "add", "not-an-address", check=False)
    assert bad.returncode == 2
    unset = subprocess.run([str(BIN_DIR / "relayctl"), "suppress", "list"], capture_output=True, timeout=30,
                           env={"PATH": os.environ["PATH"], **spool.env})
    assert unset.returncode == 2 and b"STATE_TABLE" in unset.stderr


# --------------------------------------------------------------------------- the feedback domain

def test_mail_of_our_own_leaves_with_a_return_path_and_reference_in_the_feedback_domain(rep, state_table):
    w = rep()
    q = w.send(["bob@example.test"])
    m = received(w, 1)
    local, domain = m["mail_from"].rsplit("@", 1)
    assert domain == FB and local.startswith(f"fb-{q.lower()}-") and len(local) <= 64, m["mail_from"]
    ref = re.search(rb"^X-Relay-Ref: (\S+)\r\n", m["data"], re.M).group(1).decode()
    assert local == f"fb-{ref}", "the same token in the header"
    assert ref == true_token(state_table, q), "HMAC-SHA256 of the queue id under the table's key"
    assert m["data"].startswith(b"X-Relay-Ref: "), "on top: added last, before signing"


def test_an_asynchronous_bounce_and_a_complaint_become_events_suppressions_and_reach_the_sender(
        rep, state_table):
    w = rep()
    q1 = w.send(["bob@example.test", "dave@example.test"])
    m1 = received(w, 1)
    return_path = m1["mail_from"]

    # Hours later the recipient's server bounces bob: a DSN to the return path.
    code, text = w.report(return_path, dsn(return_path, "bob@example.test", m1["data"]))
    assert code == 250, text
    entry = suppressed(state_table)["bob@example.test"]
    assert (entry["reason"]["S"], entry["queue_id"]["S"]) == ("bounce", q1)
    assert "dave@example.test" not in suppressed(state_table)
    [bounce] = [e for e in events_of(w, "Bounce") if e["mail"]["messageId"] == q1]
    b = bounce["bounce"]
    assert (b["bounceType"], b["bounceSubType"], b["reportingMTA"]) == ("Permanent", "NoEmail", "dns; mx.example.test")
    assert b["bouncedRecipients"][0]["emailAddress"] == "bob@example.test"
    assert b["bouncedRecipients"][0]["diagnosticCode"].startswith("smtp; 550 5.1.1")
    assert bounce["mail"]["source"] == SENDER and b["feedbackId"] != q1
    [fwd] = w.sender_mx.wait_for(1, timeout=60)
    assert fwd["mail_from"] in ("", "<>") and fwd["rcpt_tos"] == [SENDER]
    assert b"Final-Recipient: rfc822; bob@example.test" in fwd["data"], "the report itself reaches alice"

    # A complaint through the feedback loop address, naming the message by what it quotes.
    q2 = w.send(["carol@example.test"])
    m2 = received(w, 2)
    code, text = w.report(f"fbl@{FB}", arf(m2["data"]), sender="fbl-bounces@isp.example.test")
    assert code == 250, text
    entry = suppressed(state_table)["carol@example.test"]
    assert (entry["reason"]["S"], entry["queue_id"]["S"]) == ("complaint", q2)
    [complaint] = events_of(w, "Complaint")
    c = complaint["complaint"]
    assert complaint["mail"]["messageId"] == q2
    assert c["complainedRecipients"] == [{"emailAddress": "carol@example.test"}]
    assert (c["complaintFeedbackType"], c["userAgent"]) == ("abuse", "ExampleFBL/2.1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", c["arrivalDate"])
    fwd2 = w.sender_mx.wait_for(2, timeout=60)[1]
    assert fwd2["rcpt_tos"] == [SENDER] and b"message/feedback-report" in fwd2["data"]

    # Both are now kept away from: the next message to them is not attempted.
    w.send(["bob@example.test", "carol@example.test"])
    w.sender_mx.wait_for(3, timeout=60)
    assert (w.rcpts_seen("bob@example.test"), w.rcpts_seen("carol@example.test")) == (1, 1)


def test_forged_and_stray_reports_suppress_nobody(rep, state_table):
    w = rep()
    q = w.send(["bob@example.test"])
    m = received(w, 1)
    return_path = m["mail_from"]
    token = return_path.split("@")[0][3:]
    qid, mac = token.split("-")

    # A DSN to a return path with another MAC: refused at RCPT, before any data.
    forged = f"fb-{qid}-{'0' * len(mac) if mac != '0' * len(mac) else '1' * len(mac)}@{FB}"
    with smtplib.SMTP(*w.server.mta, timeout=60) as c:
        c.ehlo("mx.example.test")
        c.mail("")
        code, text = c.rcpt(forged)
        assert (code, text[:5]) == (550, b"5.1.1"), text
        assert c.rcpt(f"random@{FB}")[0] == 550

    # An ARF report to the loop address quoting a forged reference: accepted, changes nothing.
    fake = m["data"].replace(token.encode(), f"{qid}-{'1' * len(mac)}".encode())
    code, _ = w.report(f"fbl@{FB}", arf(fake, rcpt_to="bob@example.test"))
    assert code == 250
    w.server.process.wait_log(r"report names no message of ours; dropped", timeout=10)

    # A DSN with our token about an address the message was not sent to: nobody is suppressed.
    code, _ = w.report(return_path, dsn(return_path, "mallory@example.test", m["data"]))
    assert code == 250
    w.server.process.wait_log(r"not a recipient of the message; ignored", timeout=10)

    # A report with a true token (made here with the key from the table, as the relay would) of a
    # message that was never spooled: nothing to tie it to.
    never = new_ulid()
    code, _ = w.report(f"fbl@{FB}", arf(m["data"].replace(token.encode(), true_token(state_table, never).encode())))
    assert code == 250
    w.server.process.wait_log(r"report about a message no longer known; dropped", timeout=10)

    assert suppressed(state_table) == {}
    assert [e for e in w.events.receive() if e["eventType"] in ("Bounce", "Complaint")] == []
    # The stray DSN was about our message, so alice still gets it; the forgeries went nowhere.
    [fwd] = w.sender_mx.wait_for(1, timeout=60)
    assert b"mallory@example.test" in fwd["data"]


def test_without_the_state_table_mail_leaves_as_before(rep, state_table):
    w = rep(replies={"gone@example.test": "550 5.1.1 no such user"}, table=False)
    w.relay.wait_log(r"STATE_TABLE unset: features off", timeout=10)
    w.relay.wait_log(r"FEEDBACK_DOMAIN needs STATE_TABLE", timeout=10)
    w.server.process.wait_log(r"STATE_TABLE unset: features off", timeout=10)
    w.send(["gone@example.test", "bob@example.test"])
    m = received(w, 1)
    assert m["mail_from"] == SENDER and b"X-Relay-Ref" not in m["data"], "no return path, no reference"
    w.sender_mx.wait_for(1, timeout=60)
    w.send(["gone@example.test"])
    w.sender_mx.wait_for(2, timeout=60)
    assert w.rcpts_seen("gone@example.test") == 2, "nothing remembered: attempted again"
    assert state_table.items() == [], "the table is not touched"
