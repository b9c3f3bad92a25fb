"""Benchmark helpers for tests/bench_ingress.sh (not a test module).

  latency HOST:PORT SESSIONS MESSAGES SIZE   p50/p99 of end-of-DATA -> 250, with SESSIONS
                                              concurrent pipelining-free clients; SIZE may be
                                              @FILE: that message, from a@example.org
  signed DIR                                 a DKIM-signed message from example.org (dkimpy,
                                              a fresh RSA-2048 key) in DIR/message.eml; prints the
                                              zone lines (SPF for 127.0.0.1, DKIM key, DMARC
                                              p=reject) for infra/local/dns_server.py --rr
  idle HOST:PORT COUNT PID                   RSS growth of PID per idle connection
  big HOST:PORT CLIENTS SIZE PID             CLIENTS clients each send one SIZE-byte message at
                                              once: peak RSS of PID (sampled every 10 ms, and
                                              VmHWM), end-of-DATA -> 250 latency, throughput
"""

import asyncio
import resource
import sys
import time


async def _reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] == b" ":
            return line


async def _connect(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await _reply(reader)
    return reader, writer


async def _send_message(reader, writer, body, out, ready=None):
    """One transaction; appends its end-of-DATA -> 250 time (ms) to out. With `ready` (an
    Event), the body waits for it after the 354."""
    for cmd in (b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.test>\r\n", b"DATA\r\n"):
        writer.write(cmd)
        await _reply(reader)
    if ready:
        await ready.wait()
    writer.write(body)
    await writer.drain()
    t = time.perf_counter()
    writer.write(b".\r\n")
    line = await _reply(reader)
    out.append((time.perf_counter() - t) * 1000)
    assert line.startswith(b"250"), line


async def _quit(writer):
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def _session(host, port, n, body, out):
    reader, writer = await _connect(host, port)
    for _ in range(n):
        await _send_message(reader, writer, body, out)
    await _quit(writer)


def _payload(size):
    """The DATA payload (dot-stuffed, without the final dot): SIZE bytes of filler, or @FILE."""
    if size.startswith("@"):
        with open(size[1:], "rb") as f:
            lines = f.read().split(b"\r\n")
        return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)
    return (b"Subject: bench\r\n\r\n" + b"x" * 78 + b"\r\n") * max(1, int(size) // 80)


def signed(directory):
    import subprocess

    import dkim

    key = f"{directory}/dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    import base64
    p = base64.b64encode(der).decode()
    msg = (b"From: Alice <a@example.org>\r\nTo: Bob <b@example.test>\r\nSubject: bench\r\n"
           b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n\r\n"
           + (b"x" * 78 + b"\r\n") * 24)
    sig = dkim.sign(msg, b"s1", b"example.org", open(key, "rb").read(),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    with open(f"{directory}/message.eml", "wb") as f:
        f.write(sig + msg)
    value = f"v=DKIM1; k=rsa; p={p}"
    print('example.org. TXT "v=spf1 ip4:127.0.0.1 -all"')
    print('_dmarc.example.org. TXT "v=DMARC1; p=reject"')
    print("s1._domainkey.example.org. TXT " + " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255)))


async def latency(addr, sessions, messages, size):
    host, port = addr.rsplit(":", 1)
    body = _payload(size)
    out = []
    per = messages // sessions
    await asyncio.gather(*(_session(host, int(port), per, body, out) for _ in range(sessions)))
    out.sort()
    pct = lambda p: out[min(len(out) - 1, int(len(out) * p))]  # noqa: E731
    print(f"end-of-DATA->250 latency over {len(out)} messages, {sessions} sessions: "
          f"p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms")


def rss_kib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def idle(addr, count, pid):
    host, port = addr.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1000)), hard))
    before = rss_kib(pid)
    conns = []
    for i in range(count):
        r, w = await asyncio.open_connection(host, int(port))
        await _reply(r)
        conns.append(w)
    await asyncio.sleep(1)
    after = rss_kib(pid)
    print(f"idle connections: {count}; RSS {before} KiB -> {after} KiB; "
          f"{(after - before) / count:.1f} KiB per idle connection")
    for w in conns:
        w.close()


def big_message(size):
    """A dot-stuffed DATA payload of about `size` bytes of 78-character lines, without the final dot."""
    line = b"".join(bytes([33 + (i * 7) % 90]) for i in range(76)) + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


async def _big_session(host, port, body, start, out):
    reader, writer = await _connect(host, port)
    await _send_message(reader, writer, body, out, ready=start)
    await _quit(writer)


async def big(addr, clients, size, pid):
    host, port = addr.rsplit(":", 1)
    body = big_message(size)
    start, out, peak = asyncio.Event(), [], [0]
    idle = rss_kib(pid)

    async def sample():
        while True:
            peak[0] = max(peak[0], rss_kib(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    sessions = [asyncio.create_task(_big_session(host, int(port), body, start, out)) for _ in range(clients)]
    await asyncio.sleep(0.5)
    t = time.perf_counter()
    start.set()  # every client at its DATA: all bodies at once
    await asyncio.gather(*sessions)
    secs = time.perf_counter() - t
    sampler.cancel()
    out.sort()
    mib = lambda kib: kib / 1024  # noqa: E731
    print(f"{clients} clients x {len(body) / 1e6:.1f} MB at once: {secs:.1f} s ({clients * len(body) / 1e6 / secs:.0f} MB/s); "
          f"ingress RSS idle {mib(idle):.1f} MiB, peak {mib(peak[0]):.1f} MiB sampled, "
          f"VmHWM {mib(rss_kib(pid, 'VmHWM')):.1f} MiB; "
          f"end-of-DATA->250 p50 {out[len(out) // 2]:.0f} ms, max {out[-1]:.0f} ms")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "latency":
        asyncio.run(latency(args[0], int(args[1]), int(args[2]), args[3]))
    elif cmd == "signed":
        signed(args[0])
    elif cmd == "idle":
        asyncio.run(idle(args[0], int(args[1]), int(args[2])))
    elif cmd == "big":
        asyncio.run(big(args[0], int(args[1]), int(args[2]), int(args[3])))
    else:
        sys.exit(__doc__)
