"""Inbound authentication end to end (issue 18): the real ingress as the public MX of
inbound.test judges untrusted mail with SPF, DKIM, DMARC and ARC against records on the loopback
DNS server, signatures and ARC seals made by an independent signer (dkimpy), clients connecting
from distinct loopback addresses; what it stores lands in LocalStack's S3, which we read back.
Messages larger than a part (streamed to S3 as they arrive) are judged too, and our own ARC seal
(INGRESS_ARC_SEAL) is verified by dkimpy."""

import base64
import email
import email.policy
import smtplib
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from harness import wait_until
from test_dkim import dns_txt, keys, txt_zone_line  # noqa: F401  (keys is a fixture)
from test_relay_e2e import log_lines

HOSTNAME = "mx.inbound.test"
RCPT = "bob@inbound.test"
SENDER = "alice@sender.test"


def message(from_addr=SENDER, extra=b"", body=b"Hello Bob.\r\n"):
    return (extra + f"From: Alice <{from_addr}>\r\nTo: Bob <{RCPT}>\r\nSubject: hello\r\n".encode()
            + b"Date: Mon, 01 Dec 2025 10:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n\r\n" + body)


def signed(msg, keys, domain="sender.test", selector="s1", key="rsa", canon=(b"relaxed", b"simple")):  # noqa: F811
    sig = dkim.sign(msg, selector.encode(), domain.encode(), keys[key][0].read_bytes(),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"], canonicalize=canon)
    return sig + msg


MIB = 1024 * 1024


def large_body(size):
    """Text lines (no line dkimpy or we could re-fold) adding up to about `size` bytes: more than a
    part (5 MiB), so the ingress streams the message to S3 and judges it from there."""
    line = b"A large message, line after line, to be streamed to S3 and judged from there.\r\n"
    return line * (size // len(line) + 1)


def records(keys, ip_good):  # noqa: F811
    return [
        f'sender.test. TXT "v=spf1 ip4:{ip_good} -all"',
        '_dmarc.sender.test. TXT "v=DMARC1; p=reject"',
        txt_zone_line("s1._domainkey.sender.test", keys["rsa"][1]),  # 2048 bits: several strings
        f'quarantined.test. TXT "v=spf1 ip4:{ip_good} -all"',
        '_dmarc.quarantined.test. TXT "v=DMARC1; p=quarantine"',
        f'monitored.test. TXT "v=spf1 ip4:{ip_good} -all"',
        '_dmarc.monitored.test. TXT "v=DMARC1; p=none"',
        txt_zone_line("ed._domainkey.sender.test", keys["ed"][1]),
    ]


@pytest.fixture
def ingress(start_process, spool, loopback_hosts):
    """start(dns, **env) -> (addr, process); clients get their own addresses from loopback_hosts."""

    def start(dns, **env):
        [ip], port = loopback_hosts(1)
        proc = start_process("ingress", env={
            **spool.env, "INGRESS_LISTEN": f"{ip}:{port}", "INGRESS_HOSTNAME": HOSTNAME,
            "RELAY_DOMAINS": "inbound.test", "INGRESS_DNS_SERVERS": dns, **env,
        }, wait_port=(ip, port))
        return (ip, port), proc

    return start


def send(addr, source, msg, sender=SENDER, helo="client.sender.test"):
    """(code, text) of the end of DATA, sent from `source`."""
    with smtplib.SMTP(*addr, source_address=(source, 0), local_hostname=helo, timeout=60) as c:
        c.ehlo(helo)
        code, text = c.mail(sender)
        assert code == 250, text
        code, text = c.rcpt(RCPT)
        assert code == 250, text
        code, text = c.data(msg)
        return code, text.decode()


def stored(spool):
    return [m for k, m in sorted(spool.objects("spool/").items())]


def auth_results(raw):
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [" ".join(v.split()) for v in parsed.get_all("Authentication-Results", [])]


def test_aligned_pass_is_delivered_with_one_honest_authentication_results_and_forgeries_removed(
        dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    ips, _ = loopback_hosts(1)
    forged = (b"Authentication-Results: MX.Inbound.TEST (forged)\r\n\t; dmarc=pass header.from=sender.test\r\n"
              b"Authentication-Results: mx.inbound.test; spf=pass\r\n"
              b"Authentication-Results: other.example; dkim=pass\r\n")
    addr, _ = ingress(dns_server(*records(keys, ips[0])))
    code, text = send(addr, ips[0], signed(message(extra=forged), keys))
    assert code == 250, text
    [raw] = stored(spool)
    assert raw.startswith(b"Authentication-Results: mx.inbound.test;"), raw[:200]
    ours = [v for v in auth_results(raw) if v.lower().startswith("mx.inbound.test")]
    assert len(ours) == 1, auth_results(raw)
    for result in ("spf=pass", "dkim=pass", "dmarc=pass", "header.from=sender.test", "smtp.mailfrom=alice@sender.test"):
        assert result in ours[0], ours
    assert "other.example; dkim=pass" in auth_results(raw), "another server's results are kept"
    # The signature still verifies, independently, after our edits (all above it).
    txt = keys["rsa"][1].encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt if name.startswith(b"s1._domainkey.sender.test") else None)


def test_spf_fail_without_dkim_under_p_reject_is_refused_550_and_nothing_is_stored(
        dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, proc = ingress(dns_server(*records(keys, good)))
    code, text = send(addr, bad, message())
    assert code == 550 and text.startswith("5.7.1") and "sender.test" in text, (code, text)
    time.sleep(0.5)
    assert stored(spool) == [] and spool.peek() == [], "nothing stored, nothing queued, so no bounce"
    assert any(l.get("event") == "authenticated" and l.get("dmarc") == "fail" for l in log_lines(proc))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_dkim_alone_aligns_and_a_tampered_body_does_not(
        dns_server, ingress, loopback_hosts, spool, keys, algorithm):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, _ = ingress(dns_server(*records(keys, good)))
    if algorithm == "rsa":
        msg = signed(message(), keys)
    else:  # RFC 8463, signed by dkimpy with the Ed25519 key published under selector "ed"
        pem = serialization.load_pem_private_key(keys["ed"][0].read_bytes(), password=None)
        seed = base64.b64encode(pem.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                  serialization.NoEncryption()))
        msg = message()
        msg = dkim.sign(msg, b"ed", b"sender.test", seed, signature_algorithm=b"ed25519-sha256",
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + msg
    code, text = send(addr, bad, msg)  # SPF fails: only the signature can align
    assert code == 250, text
    [raw] = stored(spool)
    [ours] = auth_results(raw)
    assert "dkim=pass" in ours and "spf=fail" in ours and "dmarc=pass" in ours, ours
    tampered = msg.replace(b"Hello Bob.", b"Hello Bob, pay this invoice.")
    code, text = send(addr, bad, tampered)
    assert code == 550 and "sender.test" in text, (code, text)
    assert len(stored(spool)) == 1


def test_p_quarantine_is_accepted_and_marked_x_spam(dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, _ = ingress(dns_server(*records(keys, good)))
    code, text = send(addr, bad, message("carol@quarantined.test", extra=b"X-Spam: No\r\n"),
                      sender="carol@quarantined.test")
    assert code == 250, text
    [raw] = stored(spool)
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert parsed.get_all("X-Spam") == ["Yes"], "marked, and the sender's own X-Spam gone"
    [ours] = auth_results(raw)
    assert "dmarc=fail" in ours and "policy.dmarc=quarantine" in ours, ours


def test_p_none_fails_are_recorded_and_accepted_unmarked(dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, _ = ingress(dns_server(*records(keys, good)))
    code, text = send(addr, bad, message("dave@monitored.test"), sender="dave@monitored.test")
    assert code == 250, text
    [raw] = stored(spool)
    [ours] = auth_results(raw)
    assert "dmarc=fail" in ours and "policy.dmarc=none" in ours and "spf=fail" in ours, ours
    assert b"X-Spam" not in raw


def test_our_own_clients_are_not_judged(dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, own = loopback_hosts(2)[0]
    forged = b"Authentication-Results: mx.inbound.test; dmarc=pass\r\n"
    dns = dns_server(*records(keys, good))
    addr, _ = ingress(dns, RELAY_NETWORKS=f"{own}/32")
    code, text = send(addr, own, message(extra=forged))  # would be a DMARC reject from anyone else
    assert code == 250, text
    [raw] = stored(spool)
    assert auth_results(raw) == ["mx.inbound.test; dmarc=pass"], "untouched: our own mail is not judged"
    asked = [name.rstrip(".").lower() for name, _, _ in dns.queries()]
    assert "_dmarc.sender.test" not in asked, asked


def test_a_resolver_that_does_not_answer_gives_451_in_bounded_time(
        dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    [client], _ = loopback_hosts(1)
    addr, _ = ingress(dns_server("sender.test. TIMEOUT"), INGRESS_TIMEOUT="5m")
    start = time.monotonic()
    code, text = send(addr, client, signed(message(), keys))
    elapsed = time.monotonic() - start
    assert code == 451 and text.startswith("4.7."), (code, text)
    assert elapsed < 15, f"the lookups' deadline (5 s), not INGRESS_TIMEOUT: {elapsed:.1f}s"
    assert stored(spool) == []


def test_monitor_records_but_does_not_refuse_and_off_does_nothing(
        dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    dns = dns_server(*records(keys, good))
    forged = b"Authentication-Results: mx.inbound.test; dmarc=pass\r\n"
    addr, _ = ingress(dns, INGRESS_AUTH_CHECKS="monitor")
    code, text = send(addr, bad, message(extra=forged))
    assert code == 250, text
    [raw] = stored(spool)
    [ours] = auth_results(raw)
    assert "dmarc=fail" in ours and "spf=fail" in ours, ours
    assert b"X-Spam" not in raw

    addr, _ = ingress(dns, INGRESS_AUTH_CHECKS="off")
    code, text = send(addr, bad, message(extra=forged))
    assert code == 250, text
    wait_until(lambda: len(stored(spool)) == 2, 10, what="second message")
    [off] = [m for m in stored(spool) if m != raw]
    assert auth_results(off) == ["mx.inbound.test; dmarc=pass"], "off: not judged, not edited"


def forwarded(keys, sealer, body=b"Hello Bob.\r\n"):  # noqa: F811
    """A message signed by sender.test, then changed by a mailing list at `sealer` (a footer,
    which breaks the signature) and ARC-sealed there by dkimpy over the list's own results."""
    original = signed(message(body=body), keys)
    listed = (f"Authentication-Results: {sealer}; dkim=pass header.d=sender.test; spf=pass "
              f"smtp.mailfrom=sender.test; dmarc=pass header.from=sender.test\r\n").encode()
    msg = listed + original + b"-- \r\nlist footer\r\n"
    seal = dkim.arc_sign(msg, b"arc", sealer.encode(), keys["rsa2"][0].read_bytes(), sealer.encode())
    return b"".join(seal) + msg


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-sealer", "untrusted-sealer"])
def test_a_trusted_sealers_valid_arc_chain_overrides_a_dmarc_reject(
        dns_server, ingress, loopback_hosts, spool, keys, trusted):  # noqa: F811
    good, list_server = loopback_hosts(2)[0]
    dns = dns_server(*records(keys, good), txt_zone_line("arc._domainkey.lists.test", keys["rsa2"][1]))
    addr, _ = ingress(dns, INGRESS_ARC_TRUSTED_SEALERS="Lists.Test" if trusted else "other.test")
    # The list re-sends from its own address with the author's envelope sender: SPF fails too.
    code, text = send(addr, list_server, forwarded(keys, "lists.test"))
    if not trusted:
        assert code == 550 and "sender.test" in text, (code, text)
        assert stored(spool) == []
        return
    assert code == 250, text
    [raw] = stored(spool)
    ours = [v for v in auth_results(raw) if v.startswith(HOSTNAME)]
    assert len(ours) == 1, auth_results(raw)
    assert "arc=pass" in ours[0] and "dmarc=fail" in ours[0], ours
    assert "policy overridden: valid ARC chain sealed by trusted lists.test" in ours[0], ours
    assert any(v.startswith("lists.test;") for v in auth_results(raw)), "the list's own results are kept"


def uploads_left(spool):
    """Multipart uploads still open in the spool bucket."""
    return spool.s3.list_multipart_uploads(Bucket=spool.bucket).get("Uploads", [])


@pytest.mark.parametrize("size", ["memory", "streamed"])
def test_a_relaxed_signature_over_a_body_ending_in_blank_lines_verifies(
        dns_server, ingress, loopback_hosts, spool, keys, size):  # noqa: F811
    # mail-auth 0.13.3 hashes such a relaxed body wrongly; the ingress must not (DKIM is all that
    # can align here: the client's address fails SPF, and the domain says p=reject).
    good, bad = loopback_hosts(2)[0]
    addr, _ = ingress(dns_server(*records(keys, good)))
    text = large_body(6 * MIB) if size == "streamed" else b"Hello Bob.\r\n"
    msg = signed(message(body=text + b"  \r\n\t\r\n \r\n"), keys, canon=(b"relaxed", b"relaxed"))
    code, reply = send(addr, bad, msg)
    assert code == 250, reply
    [raw] = stored(spool)
    [ours] = auth_results(raw)
    assert "dkim=pass" in ours and "spf=fail" in ours and "dmarc=pass" in ours, ours
    assert raw.endswith(msg), "the message itself is stored as it came, below our header"


def test_a_streamed_message_is_judged_like_any_other(dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, proc = ingress(dns_server(*records(keys, good)))
    forged = b"Authentication-Results: mx.inbound.test; dmarc=pass header.from=sender.test\r\n"
    msg = signed(message(extra=forged, body=large_body(11 * MIB)), keys)
    code, text = send(addr, bad, msg)
    assert code == 250, text
    assert any(l.get("event") == "upload" and l.get("result") == "started" for l in log_lines(proc)), \
        "the message went to S3 in parts"
    [raw] = stored(spool)
    assert raw.startswith(b"Authentication-Results: mx.inbound.test;"), raw[:300]
    [ours] = auth_results(raw)  # the forged one is gone, ours is the only one
    assert "dkim=pass" in ours and "dmarc=pass" in ours and "spf=fail" in ours, ours
    body = msg.split(b"\r\n\r\n", 1)[1]
    assert raw.endswith(b"\r\n\r\n" + body), "the body is stored byte for byte"
    assert len(raw) > 11 * MIB
    [job] = spool.receive_jobs()
    assert job["size"] == len(raw), "the job carries the size of the message as stored"
    assert uploads_left(spool) == []
    versions = spool.s3.list_object_versions(Bucket=spool.bucket, Prefix="spool/").get("Versions", [])
    assert len(versions) == 1, "the unjudged first version was deleted when its header was rewritten"

    # The same message, tampered with after signing: a DMARC reject, and nothing left behind.
    spool.purge()
    tampered = msg.replace(b"A large message", b"A forged message", 1)
    code, text = send(addr, bad, tampered)
    assert code == 550 and "sender.test" in text, (code, text)
    time.sleep(0.5)
    assert len(stored(spool)) == 1 and spool.peek() == [] and uploads_left(spool) == []
    versions = spool.s3.list_object_versions(Bucket=spool.bucket, Prefix="spool/").get("Versions", [])
    assert len(versions) == 1, "the refused message's object was withdrawn"


def test_a_header_section_too_long_to_judge_is_refused(dns_server, ingress, loopback_hosts, spool, keys):  # noqa: F811
    good, bad = loopback_hosts(2)[0]
    addr, _ = ingress(dns_server(*records(keys, good)))
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(1200))  # ~1.1 MB of fields
    code, text = send(addr, bad, padding + message())
    assert code == 552 and text.startswith("5.3.4"), (code, text)
    assert stored(spool) == [] and uploads_left(spool) == []


@pytest.mark.parametrize("size", ["memory", "streamed"])
def test_our_arc_seal_is_verified_by_an_independent_implementation(
        dns_server, ingress, loopback_hosts, spool, keys, size):  # noqa: F811
    good, list_server = loopback_hosts(2)[0]
    dns = dns_server(*records(keys, good), txt_zone_line("arc._domainkey.lists.test", keys["rsa2"][1]),
                     txt_zone_line("seal1._domainkey.inbound.test", keys["rsa"][1]))
    # RSA: what receivers (and dkimpy) verify ARC with (RFC 8617 defines rsa-sha256 only).
    addr, proc = ingress(dns, INGRESS_ARC_SEAL=f"inbound.test:seal1:{keys['rsa'][0]}",
                         INGRESS_ARC_TRUSTED_SEALERS="lists.test")
    body = large_body(6 * MIB) if size == "streamed" else b"Hello Bob.\r\n"
    # A message a list changed and sealed (i=1): ours must be i=2 with cv=pass.
    code, text = send(addr, list_server, forwarded(keys, "lists.test", body))
    assert code == 250, text
    # One straight from the author (no chain): ours is i=1 with cv=none.
    code, text = send(addr, good, signed(message(body=body), keys))
    assert code == 250, text
    dnsfunc = dns_txt(dns)
    for raw in stored(spool):
        assert raw.startswith(b"ARC-Seal: i="), raw[:200]
        cv, results, reason = dkim.arc_verify(raw, dnsfunc=dnsfunc)
        assert cv == dkim.CV_Pass, (cv, reason, results)
        ours = [r for r in results if r["as-domain"] == b"inbound.test"]
        assert len(ours) == 1, results
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        aar = " ".join(parsed.get_all("ARC-Authentication-Results")[0].split())
        assert aar.startswith(f"i={ours[0]['instance']}; {HOSTNAME};"), aar
        assert "dmarc=" in aar and "spf=" in aar, aar
    instances = sorted(int(l["instance"]) for l in log_lines(proc) if l.get("event") == "arc_seal")
    assert instances == [1, 2], instances
