"""DKIM signing end to end, proven by a verifier nobody here wrote: dkimpy, reading the public keys
as TXT records from the real DNS server on loopback (the `dns_server` fixture), checks what the
destination actually received (aiosmtpd capture, Postfix smtp-sink). Keys are made with the
openssl commands docs/outbound.md gives, and the TXT records printed the way it says.
"""

import re
import smtplib
import subprocess

import dkim
import dns.resolver
import pytest

import test_relay_e2e
from harness import wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_relay_e2e import SENDER, bounce_of, mail_world, queue_drained, start_relay  # noqa: F401


def enqueue(spool, domain, rcpts, **fields):
    """A job for submitted mail (`trusted`: from a client allowed to relay), which is signed."""
    return test_relay_e2e.enqueue(spool, domain, rcpts, **{"trusted": True, **fields})

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: quarterly report\r\n"
    b"Date: Mon, 01 Dec 2025 10:00:00 +0000\r\n"
    b"Message-ID: <q4@example.org>\r\n"
    b"Received: from client.example.org by ingress.example.test; Mon, 01 Dec 2025 10:00:00 +0000\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Numbers  attached.\t \r\n"
    b"\r\n"
    b"Regards, Alice\r\n"
)


# --------------------------------------------------------------------------- keys and DNS

def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, check=True, capture_output=True).stdout


def public_key_der(pem_path):
    return openssl("pkey", "-in", str(pem_path), "-pubout", "-outform", "DER")


def txt_record(pem_path, kind):
    """docs/outbound.md's recipe: v=DKIM1; k=...; p=<base64 public key> (raw 32 bytes for Ed25519)."""
    der = public_key_der(pem_path)
    raw = der[-32:] if kind == "ed25519" else der
    p = openssl("base64", "-A", stdin=raw).decode().strip()
    return f"v=DKIM1; k={kind}; p={p}"


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """PEM files made docs/outbound.md's way: rsa (2048), rsa2 (2048, a second selector), ed (Ed25519),
    rsa1024 (too small), each with its TXT record value."""
    d = tmp_path_factory.mktemp("dkim")
    out = {}
    for name, args in [
        ("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        ("rsa2", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        ("ed", ["-algorithm", "ed25519"]),
        ("rsa1024", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]),
    ]:
        path = d / f"{name}.pem"
        openssl("genpkey", *args, "-out", str(path))
        out[name] = (path, txt_record(path, "ed25519" if name == "ed" else "rsa"))
    return out


def txt_zone_line(name, value):
    """A TXT record as zone-file text, split in strings of at most 255 bytes (RFC 1035 §3.3)."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
    return f"{name}. TXT " + " ".join(f'"{c}"' for c in chunks)


def dkim_records(keys, *entries):
    """TXT records for (selector, domain, key name) entries."""
    return [txt_zone_line(f"{sel}._domainkey.{domain}", keys[k][1]) for sel, domain, k in entries]


def dkim_env(keys, *entries):
    return {"RELAY_DKIM_KEYS": ",".join(f"{domain}:{sel}:{keys[k][0]}" for sel, domain, k in entries)}


# --------------------------------------------------------------------------- verification

def dns_txt(dns_addr):
    """A dkimpy `dnsfunc` asking the test DNS server at `dns_addr` for TXT records."""
    host, port = str(dns_addr).rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def dnsfunc(name, timeout=5):
        answer = resolver.resolve(name.decode() if isinstance(name, bytes) else name, "TXT", lifetime=timeout)
        return b"".join(b"".join(r.strings) for r in answer)

    return dnsfunc


def verify(data, dns_addr):
    """dkimpy's verdict on every DKIM-Signature of `data`: [(d, s, a, ok)], keys from `dns_addr`."""
    dnsfunc = dns_txt(dns_addr)
    d = dkim.DKIM(data)
    count = len(re.findall(rb"(?im)^DKIM-Signature:", data))
    results = []
    for i in range(count):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException:  # e.g. "body hash mismatch": a failed verification
            ok = False
        sig = dict(d.signature_fields)
        results.append((sig[b"d"].decode(), sig[b"s"].decode(), sig[b"a"].decode(), ok))
    return results


def signature_tags(data):
    """The tags of each DKIM-Signature field of `data` (unfolded, whitespace removed)."""
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.findall(r"(?ims)^DKIM-Signature:(.*?)(?=^\S)", header + "\r\nX-End: .\r\n")
    return [dict(t.strip().split("=", 1) for t in re.sub(r"\s+", "", f).split(";") if t) for f in fields]


def world(mail_world, keys, entries, replies=()):
    mx, sender_mx, dns_addr, port = mail_world(replies, extra_records=dkim_records(keys, *entries))
    return mx, sender_mx, dns_addr, port


RSA = ("rsa2048", "example.org", "rsa")
ED = ("ed2025", "example.org", "ed")


# --------------------------------------------------------------------------- tests

def test_rsa_signature_verifies_at_the_destination_and_breaks_when_a_field_is_added(
        mail_world, keys, spool, start_process):
    mx, _, dns_addr, port = world(mail_world, keys, [RSA])
    enqueue(spool, "example.test", ["bob@example.test"], message=MESSAGE, body="seven_bit")
    relay = start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA))
    [m] = mx.wait_for(1, timeout=60)
    data = m["data"]
    assert data.endswith(MESSAGE), "the message follows its signature unchanged"
    assert verify(data, dns_addr) == [("example.org", "rsa2048", "rsa-sha256", True)]
    [tags] = signature_tags(data)
    assert tags["c"] == "relaxed/relaxed"
    h = [n.lower() for n in tags["h"].split(":")]
    for name, n in [("from", 2), ("to", 2), ("subject", 2), ("date", 2), ("message-id", 1),
                    ("received", 0), ("x-mailer", 0)]:
        assert h.count(name) == n, (name, h)
    relay.wait_log(r'"dkim signed"')

    # The signature means something: a Subject added in transit, or a changed body, fail it.
    added = data.replace(b"To: Bob", b"Subject: act now\r\nTo: Bob", 1)
    assert verify(added, dns_addr)[0][3] is False, "over-signed Subject: an added one breaks the signature"
    changed = data.replace(b"Regards", b"Regards!", 1)
    assert verify(changed, dns_addr)[0][3] is False
    # Relaxed canonicalization: re-folded header whitespace and trailing blanks still verify.
    refolded = data.replace(b"Subject: quarterly report", b"Subject:   quarterly\r\n\treport", 1)
    assert verify(refolded, dns_addr)[0][3] is True


def test_ed25519_signature_verifies(mail_world, keys, spool, start_process):
    mx, _, dns_addr, port = world(mail_world, keys, [ED])
    enqueue(spool, "example.test", ["bob@example.test"], message=MESSAGE, body="seven_bit")
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, ED))
    [m] = mx.wait_for(1, timeout=60)
    assert verify(m["data"], dns_addr) == [("example.org", "ed2025", "ed25519-sha256", True)]


def test_every_key_of_the_from_domain_signs_and_other_domains_are_not_signed(mail_world, keys, spool, start_process):
    # RSA + Ed25519 side by side, and an old and a new RSA selector during a rotation.
    rotated = ("rsa2026", "example.org", "rsa2")
    other = ("s1", "other.test", "rsa2")
    mx, _, dns_addr, port = world(mail_world, keys, [RSA, ED, rotated, other])
    enqueue(spool, "example.test", ["bob@example.test"], message=MESSAGE, body="seven_bit")
    unsigned = MESSAGE.replace(b"alice@example.org", b"carol@elsewhere.test")
    enqueue(spool, "example.test", ["bob@example.test"], message=unsigned, body="seven_bit",
            sender="carol@elsewhere.test")
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA, ED, rotated, other))
    msgs = mx.wait_for(2, timeout=60)
    by_sender = {m["mail_from"]: m["data"] for m in msgs}
    results = verify(by_sender[SENDER], dns_addr)
    assert sorted(results) == sorted([
        ("example.org", "rsa2048", "rsa-sha256", True),
        ("example.org", "ed2025", "ed25519-sha256", True),
        ("example.org", "rsa2026", "rsa-sha256", True),
    ])
    assert by_sender["carol@elsewhere.test"] == unsigned, "no key for elsewhere.test: sent as it came"


def test_8bit_message_to_a_server_without_8bitmime_is_signed_as_converted(
        dns_server, smtp_sink, loopback_hosts, keys, spool, start_process):
    (ip,), port = loopback_hosts(1)
    sink = smtp_sink(ip, port, options=("-8",))  # no 8BITMIME in its EHLO reply
    dns_addr = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}",
                          *dkim_records(keys, RSA, ED))
    eight_bit = (
        b"From: alice@example.org\r\nTo: bob@example.test\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \r\n\xc3\xa4\xc3\xb6\xc3\xbc\r\n"
    )
    enqueue(spool, "example.test", ["bob@example.test"], message=eight_bit)
    relay = start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA, ED))
    sink.wait_for(1, timeout=60)
    [m] = sink.messages()
    data = m["data"].replace(b"\n", b"\r\n")  # smtp-sink writes LF; the wire had CRLF
    assert all(b < 0x80 for b in data.split(b"\r\n\r\n", 1)[1]), "converted to 7-bit"
    assert b"Content-Transfer-Encoding: quoted-printable" in data
    assert [r[3] for r in verify(data, dns_addr)] == [True, True]
    relay.wait_log(r"8-bit body converted to 7-bit")


def test_multipart_message_verifies(mail_world, keys, spool, start_process):
    mx, _, dns_addr, port = world(mail_world, keys, [RSA, ED])
    multipart = (
        b"From: alice@example.org\r\nTo: bob@example.test\r\nSubject: pictures\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"preamble\r\n--b1\r\n"
        b'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        b"--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Gr\xc3\xbc\xc3\x9fe  \r\n \r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b2--\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AAECAwQFBgcICQ==\r\n--b1--\r\n \r\n"
    )
    enqueue(spool, "example.test", ["bob@example.test"], message=multipart)
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA, ED))
    [m] = mx.wait_for(1, timeout=60)
    assert m["data"].endswith(multipart), "8BITMIME server: the multipart goes as it is"
    assert [r[3] for r in verify(m["data"], dns_addr)] == [True, True]


def test_body_ending_in_whitespace_only_lines_keeps_relaxed_and_verifies(mail_world, keys, spool, start_process):
    # The body mail-auth 0.13.3 hashes wrongly under relaxed body canonicalization.
    mx, _, dns_addr, port = world(mail_world, keys, [RSA, ED])
    bodies = [b"text\r\n \r\n\t\r\n", b"text \t\r\n  \r\n\r\n", b"a\r\n \r\n  \r\nb\r\n \r\n", b" \r\n\t\r\n"]
    messages = [b"From: alice@example.org\r\nSubject: ws %d\r\n\r\n" % i + body for i, body in enumerate(bodies)]
    for msg in messages:
        enqueue(spool, "example.test", ["bob@example.test"], message=msg, body="seven_bit")
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA, ED))
    received = mx.wait_for(len(messages), timeout=60)
    for msg in messages:
        [data] = [m["data"] for m in received if m["data"].endswith(msg)]
        assert [t["c"] for t in signature_tags(data)] == ["relaxed/relaxed"] * 2
        assert [r[3] for r in verify(data, dns_addr)] == [True, True], msg


def test_a_dsn_from_the_relay_is_signed_when_its_from_domain_has_a_key(mail_world, keys, spool, start_process):
    bounce_key = ("bounces", "relay.example.test", "ed")
    mx, sender_mx, dns_addr, port = world(mail_world, keys, [bounce_key, RSA],
                                          replies={"bob@example.test": "550 5.1.1 no such user"})
    enqueue(spool, "example.test", ["bob@example.test"], message=MESSAGE, body="seven_bit")
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, bounce_key, RSA))
    bounce_of(sender_mx)
    [dsn] = sender_mx.messages()
    assert re.search(rb"(?m)^From: .*<MAILER-DAEMON@relay\.example\.test>", dsn["data"]), "RELAY_BOUNCE_FROM's default"
    assert verify(dsn["data"], dns_addr) == [("relay.example.test", "bounces", "ed25519-sha256", True)]
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")


def test_a_key_in_s3_is_read_at_start(mail_world, keys, spool, start_process):
    mx, _, dns_addr, port = world(mail_world, keys, [ED])
    spool.put("dkim/ed.pem", keys["ed"][0].read_bytes())
    enqueue(spool, "example.test", ["bob@example.test"], message=MESSAGE, body="seven_bit")
    start_relay(start_process, spool, dns_addr, port,
                RELAY_DKIM_KEYS=f"example.org:ed2025:s3://{spool.bucket}/dkim/ed.pem")
    [m] = mx.wait_for(1, timeout=60)
    assert verify(m["data"], dns_addr) == [("example.org", "ed2025", "ed25519-sha256", True)]


@pytest.mark.parametrize("case", ["missing file", "not PEM", "RSA 1024", "unknown S3 object", "S3 object too large",
                                  "bad syntax"])
def test_a_key_that_cannot_be_used_stops_the_relay_at_start(case, keys, spool, start_process, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    spool.put("dkim/big.pem", b"A" * (64 * 1024 + 1))
    entry, reason = {
        "missing file": (f"example.org:s:{tmp_path}/missing.pem", "cannot read"),
        "not PEM": (f"example.org:s:{junk}", "no PEM private key"),
        "RSA 1024": (f"example.org:s:{keys['rsa1024'][0]}", "smaller than 2048 bits"),
        "unknown S3 object": (f"example.org:s:s3://{spool.bucket}/dkim/none.pem", "cannot read s3://"),
        "S3 object too large": (f"example.org:s:s3://{spool.bucket}/dkim/big.pem", "larger than 65536 bytes"),
        "bad syntax": ("example.org:s", "expected domain:selector:source"),
    }[case]
    good = f"example.org:ok:{keys['ed'][0]}"
    relay = start_process("relay", "poll", name="relay-bad-dkim",
                          env={**spool.env, "RELAY_DKIM_KEYS": f"{good},{entry}"})
    assert relay.wait(30) == 2
    log = relay.log_text()
    assert f"relay: RELAY_DKIM_KEYS: {entry}: " in log, log
    assert reason in log, log
    assert '"polling"' not in log, "it never starts serving"


def test_only_mail_of_our_own_is_signed_never_inbound_mail_with_a_forged_from(
        ingress, mail_world, keys, spool, start_process):
    """Through the real ingress: the same message, From: a signing domain, to a relay domain —
    from anyone on port 25 (inbound: anyone can forge that From:) and from RELAY_NETWORKS."""
    mx, _, dns_addr, port = world(mail_world, keys, [RSA])
    server = ingress(relay_domains="example.test", RELAY_NETWORKS="127.0.0.5/32")
    start_relay(start_process, spool, dns_addr, port, **dkim_env(keys, RSA))
    for source, subject in [("127.0.0.1", b"from the internet"), ("127.0.0.5", b"from our network")]:
        with smtplib.SMTP(*server.mta, source_address=(source, 0), timeout=30) as c:
            c.sendmail("alice@example.org", ["bob@example.test"], MESSAGE.replace(b"quarterly report", subject))
    got = {re.search(rb"Subject: ([^\r]*)", m["data"]).group(1): m["data"] for m in mx.wait_for(2, timeout=60)}
    assert verify(got[b"from the internet"], dns_addr) == [], "inbound mail is never signed"
    assert verify(got[b"from our network"], dns_addr) == [("example.org", "rsa2048", "rsa-sha256", True)]
