"""Large messages streamed to S3 by the ingress, over real parts: smtplib through DATA and
through BDAT (CHUNKING), raw sockets for cut connections and smuggling, LocalStack as the store.

A message larger than one part (INGRESS_PART_SIZE, 5 MiB: S3's minimum) goes to S3 as a
multipart upload while it arrives; the ingress holds about one part of it. These tests check
that the stored object is byte for byte what the relay will send, that the ingress's memory
(read from /proc during the transfer) stays far below the message size, and that a message
that is refused or cut off leaves no object, no incomplete upload and no job.
"""

import random
import re
import smtplib
import socket
import struct
import threading
import time

import pytest

from harness import message_key, split_auth_results, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_pipeline_e2e import assert_delivered_with_one_received_header, start_relay

MIB = 1024 * 1024
PART = 5 * MIB

HEAD = (
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.test>\r\n"
    "Subject: a large message\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
).encode()


def big_body(size, seed=1):
    """A CRLF-clean message of about `size` bytes: numbered lines of varied text, 8-bit UTF-8,
    and lines starting with dots (transparency) — different at every offset."""
    rnd = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:-"
    variants = ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(20, 90))).encode() for _ in range(997)]
    variants += [b".", b"..", b".leading dot", "Grüße aus Köln — 8-bit".encode()]
    out, n, i = [HEAD], len(HEAD), 0
    while n < size:
        v = variants[i % len(variants)]
        line = (v if v.startswith(b".") or i % 11 == 0 else b"%08d " % i + v) + b"\r\n"
        out.append(line)
        n += len(line)
        i += 1
    return b"".join(out)


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class RssSampler:
    """VmRSS of a process, sampled every 10 ms while the `with` block runs."""

    def __init__(self, pid):
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def uploads_in_progress(spool):
    return spool.s3.list_multipart_uploads(Bucket=spool.bucket).get("Uploads", [])


def assert_nothing_left(spool):
    """No object, no incomplete multipart upload, no job."""
    wait_until(lambda: not uploads_in_progress(spool), 30, what="the multipart upload to be aborted")
    assert spool.keys("spool/") == []
    assert spool.receive_jobs() == []


def queue_id_of(reply):
    m = re.search(rb"queued as (\w+)", reply)
    assert m, reply
    return m.group(1).decode()


def assert_stored_exactly(spool, queue_id, body):
    """The object is the judge's results and our one trace field followed by the client's bytes,
    and its job's size is the object's; S3 made it from parts (its ETag names their count: the
    judged header section was rewritten as a first part, the rest copied inside S3)."""
    key = message_key(queue_id)
    stored = spool.get(key)
    assert stored.endswith(body), "stored message differs from what was sent"
    trace = stored[: len(stored) - len(body)]
    results, trace = split_auth_results(trace, b"mx.ingress.test")
    assert results is not None and b"dmarc=none" in results, stored[:500]
    assert trace.startswith(b"Received: from ") and trace.endswith(b"\r\n"), trace
    assert len([line for line in trace.split(b"\r\n") if line and not line[:1].isspace()]) == 1, trace
    etag = spool.s3.head_object(Bucket=spool.bucket, Key=key)["ETag"].strip('"')
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9]+", etag) and int(etag.rsplit("-", 1)[1]) >= 2, etag
    [job] = spool.receive_jobs()
    assert (job["message_key"], job["size"]) == (key, len(stored))
    assert not uploads_in_progress(spool)


# Bound on what the ingress may add to its idle RSS while receiving one 30 MB message: about
# one 5 MiB part and its upload, with generous room for the allocator and the HTTP client —
# and far below the message (holding it whole, as before streaming, takes over 30 MB).
GROWTH_BOUND_KIB = 16 * 1024


def assert_memory_bounded(server, baseline_kib, sampler, size):
    peak = status_kib(server.process.pid, "VmHWM")
    grown = peak - baseline_kib
    assert sampler.peak_kib > 0, "RSS was sampled during the transfer"
    assert grown < GROWTH_BOUND_KIB, (
        f"ingress RSS grew by {grown} KiB (idle {baseline_kib} KiB, peak {peak} KiB, sampled peak "
        f"{sampler.peak_kib} KiB) for a {size // 1024} KiB message")


def test_a_30mb_message_through_data_arrives_byte_exact_in_bounded_memory(ingress, spool):
    body = big_body(30 * 1000 * 1000)
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(40 * MIB))
    time.sleep(0.5)
    baseline = status_kib(server.process.pid, "VmRSS")
    with smtplib.SMTP(*server.mta, timeout=300) as c, RssSampler(server.process.pid) as sampler:
        c.ehlo("client.example.org")
        assert c.mail("alice@example.org", [f"SIZE={len(body)}"])[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, reply = c.data(body)
        assert code == 250, reply
    assert_stored_exactly(spool, queue_id_of(reply), body)
    assert_memory_bounded(server, baseline, sampler, len(body))


def test_a_30mb_message_through_bdat_chunks_arrives_byte_exact_in_bounded_memory(ingress, spool):
    body = big_body(30 * 1000 * 1000, seed=2)
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(40 * MIB))
    time.sleep(0.5)
    baseline = status_kib(server.process.pid, "VmRSS")
    # Chunks that never line up with the parts: 3 MiB + 7 bytes, and the rest with LAST.
    step = 3 * MIB + 7
    chunks = [body[i:i + step] for i in range(0, len(body), step)]
    with smtplib.SMTP(*server.mta, timeout=300) as c, RssSampler(server.process.pid) as sampler:
        c.ehlo("client.example.org")
        assert c.has_extn("chunking")
        assert c.mail("alice@example.org")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        sent = 0
        for i, chunk in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            c.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            code, reply = c.getreply()
            sent += len(chunk)
            assert code == 250, reply
            if not last:
                assert reply == b"2.0.0 %d octets received" % sent
    assert_stored_exactly(spool, queue_id_of(reply), body)
    assert_memory_bounded(server, baseline, sampler, len(body))


def test_a_streamed_message_is_delivered_by_the_relay_byte_exact(
        ingress, spool, dns_server, capture_server, loopback_hosts, start_process):
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(40 * MIB))
    body = big_body(12 * MIB, seed=4)
    with smtplib.SMTP(*server.mta, timeout=300) as c:
        assert c.sendmail("alice@example.org", ["bob@example.test"], body) == {}
    server.process.wait_log(r'"result":"started"')  # it went to S3 in parts
    start_relay(start_process, spool, dns, port)
    [delivered] = mx.wait_for(1, timeout=120)
    assert_delivered_with_one_received_header(delivered, body)


def stuffed(data):
    """Dot-stuffed for DATA (RFC 5321 §4.5.2), as any client does."""
    return re.sub(rb"(\A|\r\n)\.", rb"\1..", data)


class Replies:
    """SMTP replies read off a raw socket, in order (a multi-line reply is one string)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def next(self, n=1, timeout=120):
        self.sock.settimeout(timeout)
        replies, lines = [], []
        while len(replies) < n:
            if b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
                continue
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode(errors="replace"))
            if line[3:4] != b"-":
                replies.append("\n".join(lines))
                lines = []
        return replies


def open_transaction(server):
    """A raw connection after EHLO, MAIL and RCPT: (socket, its Replies)."""
    sock = socket.create_connection(server.mta, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = Replies(sock)
    assert replies.next()[0].startswith("220")
    sock.sendall(b"EHLO client.example.org\r\n")
    assert replies.next()[0].startswith("250")
    sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\n")
    assert [r[:3] for r in replies.next(2)] == ["250", "250"]
    return sock, replies


@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_a_connection_cut_mid_upload_leaves_no_object_no_upload_and_no_job(ingress, spool, verb):
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(40 * MIB))
    body = big_body(12 * MIB)
    sock, replies = open_transaction(server)
    if verb == "DATA":
        sock.sendall(b"DATA\r\n")
        assert replies.next()[0].startswith("354")
        sock.sendall(stuffed(body))
    else:
        sock.sendall(b"BDAT %d LAST\r\n" % (len(body) + 1000) + body)
    # The upload is open and has parts: the cut comes mid-upload.
    [upload] = wait_until(lambda: uploads_in_progress(spool), 60, what="a multipart upload in progress")
    parts = wait_until(lambda: spool.s3.list_parts(Bucket=spool.bucket, Key=upload["Key"],
                                                   UploadId=upload["UploadId"]).get("Parts"),
                       60, what="uploaded parts")
    assert parts[0]["Size"] == PART
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with RST: the client is gone
    assert_nothing_left(spool)
    server.process.wait_log(r'"reason":"connection lost"')


def hostile_window():
    """Every smuggling sequence, each followed by a command that must stay message text."""
    seqs = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\n", b"\n.\r", b"\r\n.\n", b"\r.\r\n"]
    return b"".join(b"text" + s + b"MAIL FROM:<evil@example.org>\r\n" for s in seqs)


def test_smuggling_split_across_reads_and_part_boundaries_stays_message_text(ingress, spool):
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(40 * MIB))
    window = hostile_window()
    dense = window * (128 * 1024 // len(window))
    # Hostile sequences packed densely around the first and second part boundaries (the trace
    # field shifts them by a few hundred bytes; the windows are 128 KiB wide), sent as they
    # are; the text between them dot-stuffed, as a client sends it.
    pieces = [
        (stuffed(big_body(PART - 64 * 1024)), False),
        (dense, True),
        (stuffed(big_body(PART - 128 * 1024, seed=3)[len(HEAD):]), False),
        (dense, True),
        (b"end\r\n", False),
    ]
    sock, replies = open_transaction(server)
    sock.sendall(b"DATA\r\n")
    assert replies.next()[0].startswith("354")
    rnd = random.Random(5)
    for data, in_small_sends in pieces:
        at = 0
        while at < len(data):
            n = rnd.choice([1, 2, 3, 5, 8, 13, 1000, 4093]) if in_small_sends else len(data)
            sock.sendall(data[at:at + n])
            at += n
    sock.sendall(b"\r\n.\r\nNOOP\r\nQUIT\r\n")
    got = replies.next(3)
    sock.close()
    # One reply for the whole message: nothing in it was ever a command.
    assert [r[:9] for r in got] == ["250 2.0.0", "250 2.0.0", "221 2.0.0"], got
    stored = spool.get(message_key(queue_id_of(got[0].encode())))
    assert len(stored) > 2 * PART
    assert stored.count(b"MAIL FROM:<evil@example.org>") == 2 * dense.count(b"MAIL FROM:<evil@example.org>")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", stored) is None, "bare CR or LF stored"
    assert stored.endswith(b"end\r\n\r\n")
    assert not uploads_in_progress(spool)


def refusal(kind):
    """(message, expected reply) for a message refused only after its first part went to S3."""
    tail = big_body(PART + MIB)[len(HEAD):]
    if kind == "nul":
        cut = tail.index(b"\r\n", PART + 256 * 1024) + 2
        return HEAD + tail[:cut] + b"a NUL \x00 here\r\n" + tail[cut:], "550 5.6.0"
    if kind == "hops":
        # 50 trace fields, then more than a part of header, then one more: with ours, 52.
        hops = b"Received: from a.example by b.example; Sun, 29 Nov 2026 05:00:00 +0000\r\n" * 50
        filler = b"X-Filler: " + b"y" * 988 + b"\r\n"
        header = hops + filler * (PART // len(filler) + 10) + b"Received: one too many\r\n"
        return header + b"Subject: loop\r\n\r\nbody\r\n", "554 5.4.6"
    if kind == "size":
        return big_body(12 * MIB), "552 5.3.4"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["nul", "hops", "size"])
def test_a_message_refused_after_its_first_part_leaves_nothing(ingress, spool, kind):
    server = ingress(INGRESS_MAX_MESSAGE_SIZE=str(8 * MIB))
    message, want = refusal(kind)
    sock, replies = open_transaction(server)
    sock.sendall(b"DATA\r\n")
    assert replies.next()[0].startswith("354")
    data = stuffed(message) + b".\r\nNOOP\r\n"
    # Just over one part first, so the upload has begun before the bytes that refuse the message
    # arrive (sent at once, a large read could carry both and the upload would never start).
    first = PART + 4096
    sock.sendall(data[:first])
    server.process.wait_log(r'"result":"started"')
    sock.sendall(data[first:])
    got = replies.next(2)
    sock.close()
    assert got[0].startswith(want), got
    assert got[1].startswith("250"), "the session goes on"
    assert_nothing_left(spool)
    server.process.wait_log(r'"result":"aborted"')
