"""Benchmark helpers for tests/bench_ingress.sh (not a test module).

  latency HOST:PORT SESSIONS MESSAGES SIZE   p50/p99 of end-of-DATA -> 250, with SESSIONS
                                              concurrent pipelining-free clients
  idle HOST:PORT COUNT PID                   RSS growth of PID per idle connection
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


async def _session(host, port, n, body, out):
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await _reply(reader)
    for _ in range(n):
        for cmd in (b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.test>\r\n", b"DATA\r\n"):
            writer.write(cmd)
            await _reply(reader)
        writer.write(body)
        t = time.perf_counter()
        writer.write(b".\r\n")
        line = await _reply(reader)
        out.append((time.perf_counter() - t) * 1000)
        assert line.startswith(b"250"), line
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def latency(addr, sessions, messages, size):
    host, port = addr.rsplit(":", 1)
    body = (b"Subject: bench\r\n\r\n" + b"x" * 78 + b"\r\n") * max(1, size // 80)
    out = []
    per = messages // sessions
    await asyncio.gather(*(_session(host, int(port), per, body, out) for _ in range(sessions)))
    out.sort()
    pct = lambda p: out[min(len(out) - 1, int(len(out) * p))]  # noqa: E731
    print(f"end-of-DATA->250 latency over {len(out)} messages, {sessions} sessions: "
          f"p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
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


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "latency":
        asyncio.run(latency(args[0], int(args[1]), int(args[2]), int(args[3])))
    elif cmd == "idle":
        asyncio.run(idle(args[0], int(args[1]), int(args[2])))
    else:
        sys.exit(__doc__)
