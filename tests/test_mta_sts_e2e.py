"""MTA-STS (RFC 8461) end to end over real parts: the policy served over HTTPS on loopback port
443 by infra/local/policy_server.py (http.server + ssl), its certificate for
mta-sts.<domain> from a private CA the relay trusts through RELAY_TLS_CA; the `_mta-sts` TXT,
MX and A records on the test DNS server; MX hosts that are capture servers with and without
STARTTLS (certificates for the MX name from the same CA); `relay poll` over LocalStack.
"""

import json

import pytest

from harness import _bindable, wait_until
from test_relay_e2e import MESSAGE, enqueue, log_lines, start_relay

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"


def web_host(loopback_hosts):
    """A fresh loopback address whose port 443 is free (the policy host's address)."""
    for _ in range(20):
        (ip,), _ = loopback_hosts(1)
        if _bindable(ip, 443):
            return ip
    raise RuntimeError("no loopback address with port 443 free")


def sts_records(domain, ip_web, policy_id="1"):
    return [f'_mta-sts.{domain}. TXT "v=STSv1; id={policy_id}"', f"mta-sts.{domain}. A {ip_web}"]


def outcomes(relay):
    return [l for l in log_lines(relay) if l.get("message") == "delivery"]


def outcome_of(relay, recipient, timeout=60):
    return wait_until(lambda: next((l for l in outcomes(relay) if l["recipient"] == recipient), None), timeout,
                      what=f"an outcome for {recipient}")


@pytest.fixture
def sts_world(dns_server, capture_server, policy_server, loopback_hosts, tls_ca):
    """example.test: MX mx.example.test on a capture server (STARTTLS with a CA certificate for
    mx.example.test when mx_tls is "valid", a self-signed one when "self-signed", none when None)
    and `policy` served at https://mta-sts.example.test/ -> (mx, policy server, dns, port).
    The domains in `also` publish the same policy from the same server."""

    def build(policy=ENFORCE, mx_tls="valid", extra_records=(), also=()):
        (ip_mx,), port = loopback_hosts(1)
        ip_web = web_host(loopback_hosts)
        cert = {"valid": tls_ca.issue(["mx.example.test"]), "self-signed": True, None: False}[mx_tls]
        mx = capture_server(ip_mx, port, tls=cert)
        domains = ("example.test", *also)
        web = policy_server(ip_web, policy, tls_ca.issue([f"mta-sts.{d}" for d in domains]))
        dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                         *[r for d in domains for r in sts_records(d, ip_web)], *extra_records)
        return mx, web, dns, port

    return build


def relay_env(tls_ca, **env):
    return {"RELAY_TLS_CA": str(tls_ca.ca_path), "RELAY_RETRY_SCHEDULE": "1h", **env}


def test_enforce_and_an_mx_without_starttls_defers_and_sends_nothing(sts_world, spool, start_process, tls_ca):
    mx, web, dns, port = sts_world(mx_tls=None)
    job = enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    line = outcome_of(relay, "bob@example.test")
    assert line["status"] == "deferred", line
    assert line["reply"].startswith("4.7.4 ") and "MTA-STS policy requires TLS" in line["reply"], line
    assert mx.events() == [] and mx.messages() == [], "not even RCPT in plaintext"
    [retry] = wait_until(lambda: [m["job"] for m in spool.peek() if m["job"]["attempt"] == 1], 30, what="retry job")
    assert retry["queue_id"] == job["queue_id"] and retry["recipients"][0]["state"] == "pending"
    assert web.requests() == [("/.well-known/mta-sts.txt", "200")]


def test_enforce_and_a_valid_certificate_delivers_over_verified_tls_and_caches_the_policy(
        sts_world, spool, start_process, tls_ca):
    mx, web, dns, port = sts_world()
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    [m] = mx.wait_for(1, timeout=60)
    assert m["tls"] and m["data"] == MESSAGE
    line = outcome_of(relay, "bob@example.test")
    assert (line["status"], line["tls"], line["tls_verified"], line["tls_policy"]) == \
        ("sent", True, True, "mta-sts-enforce"), line
    stored = json.loads(spool.get("mta-sts/example.test.json"))
    assert (stored["domain"], stored["id"], stored["policy"]) == \
        ("example.test", "1", {"mode": "enforce", "max_age": 86400, "mx": ["mx.example.test"]}), stored

    # The next message costs no policy request: the policy is cached in memory.
    enqueue(spool, "example.test", ["carol@example.test"])
    mx.wait_for(2, timeout=60)
    assert outcome_of(relay, "carol@example.test")["tls_verified"] is True
    assert len(web.requests()) == 1, web.requests()


def test_enforce_refuses_certificates_that_do_not_prove_the_mx_name(
        dns_server, capture_server, policy_server, loopback_hosts, spool, start_process, tls_ca):
    # a.test: a self-signed certificate; b.test: one from the trusted CA, for another name.
    (ip_a, ip_b), port = loopback_hosts(2)
    webs = {d: web_host(loopback_hosts) for d in ("a.test", "b.test")}
    mx_a = capture_server(ip_a, port, tls=True)
    mx_b = capture_server(ip_b, port, tls=tls_ca.issue(["other-name.b.test"]))
    for d in webs:
        policy_server(webs[d], ENFORCE.replace("example.test", d), tls_ca.issue([f"mta-sts.{d}"]))
    dns = dns_server("a.test. MX 10 mx.a.test.", f"mx.a.test. A {ip_a}", "b.test. MX 10 mx.b.test.",
                     f"mx.b.test. A {ip_b}", *sts_records("a.test", webs["a.test"]),
                     *sts_records("b.test", webs["b.test"]))
    enqueue(spool, "a.test", ["bob@a.test"])
    enqueue(spool, "b.test", ["bob@b.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    for rcpt in ("bob@a.test", "bob@b.test"):
        line = outcome_of(relay, rcpt)
        assert line["status"] == "deferred" and line["reply"].startswith("4.7.5 TLS handshake failed"), line
    assert mx_a.messages() == [] and mx_b.messages() == []
    assert mx_a.events() == [] and mx_b.events() == []
    tries = [l for l in log_lines(relay) if l.get("message") == "session failed"]
    assert len(tries) == 2, "one handshake per host, no plaintext retry: " + json.dumps(tries)


def test_enforce_never_tries_an_mx_host_the_policy_does_not_list(
        sts_world, capture_server, loopback_hosts, spool, start_process, tls_ca):
    # rogue.example.test would take plaintext mail and is the best MX of both domains; the policy
    # lists only mx.example.test. other.test has no listed MX at all.
    (ip_rogue,), _ = loopback_hosts(1)
    mx, web, dns, port = sts_world(also=("other.test",), extra_records=[
        "example.test. MX 5 rogue.example.test.", f"rogue.example.test. A {ip_rogue}",
        "other.test. MX 10 rogue.example.test.",
    ])
    rogue = capture_server(ip_rogue, port)
    enqueue(spool, "example.test", ["bob@example.test"])
    enqueue(spool, "other.test", ["bob@other.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))

    [m] = mx.wait_for(1, timeout=60)
    assert m["tls"] and m["rcpt_tos"] == ["bob@example.test"]
    line = outcome_of(relay, "bob@example.test")
    assert (line["status"], line["relay"], line["tls_verified"]) == ("sent", "mx.example.test", True), line
    skipped = [l for l in log_lines(relay) if "does not list are skipped" in l.get("message", "")]
    assert skipped and skipped[0]["unlisted"] == "rogue.example.test", skipped

    line = outcome_of(relay, "bob@other.test")
    assert line["status"] == "deferred" and line["reply"].startswith("4.7.0 MTA-STS policy of other.test"), line
    assert rogue.events() == [] and rogue.messages() == [], "the unlisted MX was never tried"
    assert "rogue.example.test" not in [l.get("host") for l in log_lines(relay)]


def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(sts_world, spool, start_process, tls_ca):
    mx, web, dns, port = sts_world(policy=ENFORCE.replace("enforce", "testing"), mx_tls=None)
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    [m] = mx.wait_for(1, timeout=60)
    assert not m["tls"] and m["data"] == MESSAGE
    line = outcome_of(relay, "bob@example.test")
    assert (line["status"], line["tls"], line["tls_verified"], line["tls_policy"]) == \
        ("sent", False, False, "mta-sts-testing"), line
    [warning] = [l for l in log_lines(relay) if l.get("message", "").startswith("mta-sts testing:")]
    assert warning["failure"] == "no TLS" and warning["host"] == "mx.example.test", warning


def test_the_cached_policy_is_enforced_after_a_restart_with_the_policy_server_down(
        sts_world, dns_server, capture_server, spool, start_process, tls_ca):
    mx, web, dns, port = sts_world()
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    assert mx.wait_for(1, timeout=60)[0]["tls"]
    assert outcome_of(relay, "bob@example.test")["tls_verified"] is True
    relay.stop()
    web.stop()
    # The MX now takes plaintext only, and DNS announces a new policy id that cannot be fetched:
    # what an attacker who controls DNS and the network path would arrange.
    ip_mx = mx.ip
    mx.stop()
    plain_mx = capture_server(ip_mx, port)
    ip_web = web.ip
    dns2 = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                      *sts_records("example.test", ip_web, policy_id="2"))
    enqueue(spool, "example.test", ["carol@example.test"])
    relay = start_relay(start_process, spool, dns2, port, **relay_env(tls_ca))
    line = outcome_of(relay, "carol@example.test")
    assert line["status"] == "deferred" and line["reply"].startswith("4.7.4 "), line
    failed = [l for l in log_lines(relay) if l.get("message") == "mta-sts policy fetch failed"]
    assert failed and failed[0]["cached_policy_applies"] is True, failed
    # (The new server writes into the old one's directory: look for carol only.)
    assert not [e for e in plain_mx.events() if "carol" in json.dumps(e)], plain_mx.events()
    assert [m["rcpt_tos"] for m in plain_mx.messages()] == [["bob@example.test"]]


@pytest.mark.parametrize("case,server,error", [
    ("redirect", {"status": 301}, "redirects are not followed"),
    ("not found", {"status": 404}, "HTTP 404"),
    ("html", {"content_type": "text/html"}, "is not text/plain"),
    ("untrusted certificate", {"self_signed": True}, "TLS: invalid peer certificate"),
    ("slower than the 10 s limit", {"delay": 11}, "no answer within 10s"),
])
def test_a_policy_that_cannot_be_fetched_is_not_applied(
        dns_server, capture_server, policy_server, loopback_hosts, spool, start_process, tls_ca, tls_cert,
        case, server, error):
    (ip_mx,), port = loopback_hosts(1)
    ip_web = web_host(loopback_hosts)
    mx = capture_server(ip_mx, port)  # plaintext: delivered only when no enforce policy applies
    server = dict(server)
    cert = tls_cert if server.pop("self_signed", False) else tls_ca.issue(["mta-sts.example.test"])
    policy_server(ip_web, ENFORCE, cert, **server)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                     *sts_records("example.test", ip_web))
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca))
    [m] = mx.wait_for(1, timeout=60)
    assert not m["tls"]
    [failed] = [l for l in log_lines(relay) if l.get("message") == "mta-sts policy fetch failed"]
    assert error in failed["error"] and failed["cached_policy_applies"] is False, failed
    assert outcome_of(relay, "bob@example.test")["tls_policy"] == "default"
    assert spool.keys("mta-sts/") == []


def test_mta_sts_off_ignores_policies(sts_world, spool, start_process, tls_ca):
    mx, web, dns, port = sts_world(mx_tls=None)
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, **relay_env(tls_ca, RELAY_MTA_STS="off"))
    [m] = mx.wait_for(1, timeout=60)
    assert not m["tls"]
    assert outcome_of(relay, "bob@example.test")["tls_policy"] == "default"
    assert web.requests() == []
    assert not [q for q in dns.queries() if q[0].startswith("_mta-sts.")], dns.queries()
