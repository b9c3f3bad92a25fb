"""The inbound gateway end to end over real parts: per-domain routes (RELAY_ROUTES) and loop
detection (RELAY_LOCAL_NAMES / RELAY_HELO_NAME), with LocalStack, the loopback DNS server, the real
ingress where the relay would otherwise talk to itself, and aiosmtpd / Postfix smtp-sink as the
internal servers and MX hosts.
"""

import smtplib
import time

import pytest

from harness import split_auth_results, wait_until
from test_relay_e2e import MESSAGE, SENDER, bounce_of, enqueue, log_lines, queue_drained, start_relay

HELO = "relay.example.test"  # RELAY_HELO_NAME of start_relay


def statuses(relay, job):
    return [(l["status"], l["attempt"]) for l in log_lines(relay)
            if l.get("queue_id") == job["queue_id"] and "status" in l]


def ingress_transactions(ingress):
    """MAIL commands the ingress accepted (its port check at start-up opens a session too)."""
    return [l for l in log_lines(ingress) if l.get("event") == "mail"]


def start_ingress(start_process, spool, ip, port, hostname, domains):
    """The real ingress as the public MX of `domains`, on ip:port (RELAY_MX_PORT)."""
    return start_process("ingress", env={
        **spool.env, "INGRESS_LISTEN": f"{ip}:{port}", "INGRESS_HOSTNAME": hostname, "RELAY_DOMAINS": domains,
    }, wait_port=(ip, port))


def send(ingress_addr, rcpts):
    with smtplib.SMTP(*ingress_addr, timeout=30) as c:
        assert c.sendmail(SENDER, rcpts, MESSAGE) == {}


def retry_jobs(spool):
    return [m["job"] for m in spool.peek() if m["job"] and m["job"]["attempt"] >= 1]


@pytest.mark.parametrize("mx_name,local_names", [
    ("mx.inbound.test", "mx.inbound.test"),  # the MX is the ingress's name, in RELAY_LOCAL_NAMES
    (HELO, ""),                              # the MX is RELAY_HELO_NAME itself
])
def test_a_routed_domain_whose_mx_is_the_relay_is_delivered_to_the_route_over_starttls(
        dns_server, capture_server, loopback_hosts, spool, start_process, mx_name, local_names):
    (ip_public, ip_internal), port = loopback_hosts(2)
    internal = capture_server(ip_internal, port, tls=True, hostname="exchange.corp.test")
    dns = dns_server(f"inbound.test. MX 10 {mx_name}.", f"{mx_name}. A {ip_public}",
                     f"exchange.corp.test. A {ip_internal}")
    # The public MX is our own ingress: mail that went there again would loop.
    ingress = start_ingress(start_process, spool, ip_public, port, "mx.inbound.test", "inbound.test")
    relay = start_relay(start_process, spool, dns, port, RELAY_LOCAL_NAMES=local_names,
                        RELAY_ROUTES=f"inbound.test=exchange.corp.test:{port}")
    send((ip_public, port), ["bob@inbound.test", "carol@inbound.test"])

    [m] = internal.wait_for(1, timeout=60)
    assert sorted(m["rcpt_tos"]) == ["bob@inbound.test", "carol@inbound.test"], "one job, one transaction"
    assert m["tls"], "opportunistic STARTTLS to a route, as to an MX"
    results, data = split_auth_results(m["data"], b"mx.inbound.test")  # judged: the client is untrusted
    assert results is not None and data.endswith(MESSAGE) and data.startswith(b"Received: from ")
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    sent = [l for l in log_lines(relay) if l.get("status") == "sent"]
    assert {l["recipient"] for l in sent} == {"bob@inbound.test", "carol@inbound.test"}
    assert all(l["relay"] == "exchange.corp.test" and l["addr"] == f"{ip_internal}:{port}" and l["tls"]
               for l in sent), sent
    assert len(ingress_transactions(ingress)) == 1, "only the client's: the relay never came back"
    asked = [(name.rstrip(".").lower(), qtype) for name, qtype, _ in dns.queries()]
    assert ("inbound.test", "MX") not in asked, f"a routed domain needs no MX lookup: {asked}"
    assert ("exchange.corp.test", "A") in asked, asked


def test_routes_win_for_their_domain_and_the_smarthost_takes_the_rest(
        dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip_route, ip_smarthost, ip_mx), port = loopback_hosts(3)
    route, smarthost, mx = capture_server(ip_route, port), capture_server(ip_smarthost, port), capture_server(ip_mx, port)
    dns = dns_server("inbound.test. MX 10 mx.example.test.", "example.test. MX 10 mx.example.test.",
                     f"mx.example.test. A {ip_mx}")
    enqueue(spool, "inbound.test", ["bob@inbound.test"])
    enqueue(spool, "example.test", ["carol@example.test"])
    start_relay(start_process, spool, dns, port, RELAY_ROUTES=f"inbound.test={ip_route}:{port}",
                RELAY_SMARTHOST=f"{ip_smarthost}:{port}", RELAY_SMARTHOST_TLS="starttls")
    [r] = route.wait_for(1, timeout=60)
    [s] = smarthost.wait_for(1, timeout=60)
    assert (r["rcpt_tos"], s["rcpt_tos"]) == (["bob@inbound.test"], ["carol@example.test"])
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert mx.messages() == [] and mx.events() == [], "no MX delivery while routes and a smarthost cover everything"


def test_a_domain_whose_only_mx_is_the_relay_bounces_5_4_6_after_one_attempt(
        dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip_public, ip_sender), port = loopback_hosts(2)
    sender_mx = capture_server(ip_sender, port)
    dns = dns_server("loop.test. MX 10 mx.loop.test.", f"mx.loop.test. A {ip_public}",
                     "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
    # Accepts loop.test but has no route for it: without loop detection every delivery would
    # come back to this ingress until the 50-Received limit.
    ingress = start_ingress(start_process, spool, ip_public, port, "mx.loop.test", "loop.test")
    relay = start_relay(start_process, spool, dns, port, RELAY_LOCAL_NAMES="mx.loop.test",
                        RELAY_RETRY_SCHEDULE="10m")
    send((ip_public, port), ["bob@loop.test"])

    text = bounce_of(sender_mx)
    for field in ("Final-Recipient: rfc822; bob@loop.test", "Action: failed", "Status: 5.4.6",
                  "mail for loop.test loops back to myself"):
        assert field in text, f"{field!r} missing in\n{text}"
    wait_until(lambda: queue_drained(spool), 30, what="empty queue: no retry job")
    time.sleep(2)
    assert len(sender_mx.messages()) == 1, "one DSN"
    bounced = [l for l in log_lines(relay) if l.get("recipient") == "bob@loop.test"]
    assert [(l["status"], l["attempt"]) for l in bounced] == [("bounced", 1)], bounced
    assert len(ingress_transactions(ingress)) == 1, "only the client's: the relay never came back"


@pytest.mark.parametrize("down", [False, True], ids=["primary-up", "primary-down"])
def test_as_a_backup_mx_only_the_better_mx_is_tried(dns_server, capture_server, loopback_hosts, spool,
                                                     start_process, down):
    (ip_primary, ip_self, ip_worse, ip_sender), port = loopback_hosts(4)
    primary = None if down else capture_server(ip_primary, port)
    self_mx, worse, sender_mx = capture_server(ip_self, port), capture_server(ip_worse, port), capture_server(ip_sender, port)
    dns = dns_server("backup.test. MX 10 primary.backup.test.", f"primary.backup.test. A {ip_primary}",
                     f"backup.test. MX 20 {HELO}.", f"{HELO}. A {ip_self}",
                     "backup.test. MX 30 worse.backup.test.", f"worse.backup.test. A {ip_worse}",
                     "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
    job = enqueue(spool, "backup.test", ["bob@backup.test"])
    relay = start_relay(start_process, spool, dns, port, RELAY_RETRY_SCHEDULE="10m")
    if not down:
        [m] = primary.wait_for(1, timeout=60)
        assert m["rcpt_tos"] == ["bob@backup.test"] and m["data"] == MESSAGE
        wait_until(lambda: queue_drained(spool), 30, what="empty queue")
        assert statuses(relay, job) == [("sent", 1)]
    else:
        [retry] = wait_until(lambda: retry_jobs(spool), 60, what="the retry job")
        assert retry["queue_id"] == job["queue_id"] and retry["attempt"] == 1
        assert [r["address"] for r in retry["recipients"]] == ["bob@backup.test"]
        [deferred] = [l for l in log_lines(relay) if l.get("queue_id") == job["queue_id"] and "status" in l]
        assert deferred["status"] == "deferred" and "4.4.1" in deferred["reply"], deferred
        assert deferred["relay"] == "primary.backup.test", deferred
    time.sleep(1)
    for server in (self_mx, worse, sender_mx):
        assert server.messages() == [] and server.events() == [], \
            "never to ourselves, never to a worse MX, no bounce"
    asked = {name.rstrip(".").lower() for name, qtype, _ in dns.queries() if qtype in ("A", "AAAA")}
    assert "worse.backup.test" not in asked and HELO not in asked, asked


@pytest.mark.parametrize("peer", ["ingress", "smtp-sink"])
def test_a_server_that_greets_with_our_helo_name_is_a_5_4_6_loop(dns_server, capture_server, smtp_sink,
                                                                 loopback_hosts, spool, start_process, peer):
    (ip_peer, ip_sender), port = loopback_hosts(2)
    sender_mx = capture_server(ip_sender, port)
    # An MX name the relay does not know as its own, served by a server calling itself HELO:
    # our own ingress under another DNS name, or an independent server misconfigured so.
    dns = dns_server("alias.test. MX 10 mail.alias.test.", f"mail.alias.test. A {ip_peer}",
                     "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
    if peer == "ingress":
        server = start_ingress(start_process, spool, ip_peer, port, HELO, "alias.test")
    else:
        server = smtp_sink(ip_peer, port, hostname=HELO)
    job = enqueue(spool, "alias.test", ["bob@alias.test"])
    relay = start_relay(start_process, spool, dns, port, RELAY_RETRY_SCHEDULE="10m")
    text = bounce_of(sender_mx)
    assert "Status: 5.4.6" in text and "loops back to myself" in text, text
    wait_until(lambda: queue_drained(spool), 30, what="empty queue: no retry job")
    assert statuses(relay, job) == [("bounced", 1)]
    if peer == "ingress":
        assert ingress_transactions(server) == [], "nothing was handed to ourselves"
    else:
        assert server.count() == 0


def test_a_route_host_that_does_not_resolve_or_refuses_connections_defers(
        dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip_dead, ip_mx, ip_sender), port = loopback_hosts(3)  # nothing listens on ip_dead
    mx, sender_mx = capture_server(ip_mx, port), capture_server(ip_sender, port)
    dns = dns_server("unresolved.test. MX 10 mx.example.test.", "refused.test. MX 10 mx.example.test.",
                     f"mx.example.test. A {ip_mx}",
                     "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
    unresolved = enqueue(spool, "unresolved.test", ["bob@unresolved.test"])
    refused = enqueue(spool, "refused.test", ["carol@refused.test"])
    relay = start_relay(start_process, spool, dns, port, RELAY_RETRY_SCHEDULE="10m",
                        RELAY_ROUTES=f"unresolved.test=nowhere.corp.test:{port},refused.test={ip_dead}:{port}")
    retries = wait_until(lambda: len(retry_jobs(spool)) == 2 and retry_jobs(spool), 60, what="two retry jobs")
    assert sorted(j["queue_id"] for j in retries) == sorted([unresolved["queue_id"], refused["queue_id"]])
    for job, status, says in ((unresolved, "4.4.3", "nowhere.corp.test does not exist"),
                              (refused, "4.4.1", f"connect to {ip_dead}:{port}")):
        [line] = [l for l in log_lines(relay) if l.get("queue_id") == job["queue_id"] and "status" in l]
        assert (line["status"], line["attempt"]) == ("deferred", 1), line
        assert status in line["reply"] and says in line["reply"], line
    time.sleep(1)
    assert mx.messages() == [] and mx.events() == [], "no fallback to MX for a routed domain"
    assert sender_mx.messages() == [], "a deferral, not a bounce"


def test_bad_routes_stop_the_relay_naming_the_variable(start_process, spool):
    for routes, reason in (("inbound.test", "is not domain=host:port"),
                           ("a.test=h:25,A.test=h2:25", "a.test has more than one route"),
                           (f"a.test={HELO}:25", "the mail would loop")):
        relay = start_process("relay", "poll", env={**spool.env, "RELAY_HELO_NAME": HELO, "RELAY_ROUTES": routes})
        assert relay.wait(timeout=20) == 2
        assert "relay: RELAY_ROUTES: " in relay.log_text() and reason in relay.log_text(), relay.log_text()
