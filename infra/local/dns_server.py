"""Authoritative test DNS server on loopback (UDP and TCP), built on dnslib.

Owns the zone description format used by infra/local/dns-server, infra/local/run and the
`dns_server` test fixture. Records are zone-file lines (dnslib's parser: $ORIGIN, $TTL, default
TTL 0 so resolvers do not cache between test steps):

    example.test.      MX 10 mx1.example.test.
    example.test.      MX 20 mx2.example.test.
    mx1.example.test.  A 127.0.0.2
    null.test.         MX 0 .              ; RFC 7505 null MX
    implicit.test.     A 127.0.0.1         ; no MX: NODATA for MX, so the A is the implicit MX

plus behaviour lines `NAME SERVFAIL|REFUSED|NXDOMAIN|TIMEOUT` that apply to NAME and every name
below it (TIMEOUT: the query is dropped, no answer at all).

Answers: records of the asked type (following CNAMEs inside the data) -> NOERROR; a name that
exists (or has names below it) but has no such records -> NOERROR/NODATA with an SOA; any other
name -> NXDOMAIN with an SOA. Every query is logged to stdout as `query NAME TYPE -> RESULT`.

    python dns_server.py --port 5353 [--listen 127.0.0.1] [--zone FILE]... [--rr 'LINE']...
"""

import argparse
import asyncio
import signal
import struct
import sys

from dnslib import QTYPE, RCODE, RR, SOA, DNSLabel, DNSRecord

BEHAVIOURS = ("SERVFAIL", "REFUSED", "NXDOMAIN", "TIMEOUT")


class Zone:
    def __init__(self, text):
        self.records = {}  # DNSLabel -> [RR]
        self.behaviours = {}  # DNSLabel -> behaviour
        zone_lines = []
        for line in text.splitlines():
            fields = line.split(";", 1)[0].split()
            if len(fields) == 2 and fields[1].upper() in BEHAVIOURS:
                self.behaviours[DNSLabel(fields[0])] = fields[1].upper()
            else:
                zone_lines.append(line)
        for rr in RR.fromZone("\n".join(zone_lines), ttl=0):
            self.records.setdefault(rr.rname, []).append(rr)

    def behaviour(self, qname):
        best = None
        for name, what in self.behaviours.items():
            if qname.matchSuffix(name) and (best is None or len(name.label) > len(best[0].label)):
                best = (name, what)
        return best[1] if best else None

    def exists(self, qname):
        return any(name.matchSuffix(qname) for name in self.records)

    def soa(self, qname):
        """The SOA of the closest enclosing zone in the data, else one made up for the TLD."""
        for i in range(len(qname.label) + 1):
            apex = DNSLabel(qname.label[i:])
            for rr in self.records.get(apex, []):
                if rr.rtype == QTYPE.SOA:
                    return rr
        tld = DNSLabel(qname.label[-1:])
        return RR(tld, QTYPE.SOA, ttl=0, rdata=SOA(f"ns.{tld}", f"hostmaster.{tld}", (1, 3600, 600, 86400, 0)))

    def answer(self, request):
        """(reply, result text); reply is None when the query must be dropped."""
        q = request.q
        reply = request.reply()
        reply.header.aa = 1
        what = self.behaviour(q.qname)
        if what == "TIMEOUT":
            return None, "dropped"
        if what in ("SERVFAIL", "REFUSED"):
            reply.header.aa = 0
            reply.header.rcode = getattr(RCODE, what)
            return reply, what
        name, seen = q.qname, set()
        while what is None and name not in seen:
            seen.add(name)
            rrs = self.records.get(name, [])
            found = [rr for rr in rrs if q.qtype in (rr.rtype, QTYPE.ANY)]
            cname = [rr for rr in rrs if rr.rtype == QTYPE.CNAME]
            if found:
                reply.add_answer(*found)
                return reply, "NOERROR " + " | ".join(str(rr.rdata) for rr in found)
            if cname:
                reply.add_answer(*cname)
                name = cname[0].rdata.label
                what = self.behaviour(name)
                continue
            break
        if what in ("SERVFAIL", "REFUSED"):
            reply.header.rcode = getattr(RCODE, what)
            return reply, what
        reply.add_auth(self.soa(name))
        if what is None and self.exists(name):
            return reply, "NODATA"
        reply.header.rcode = RCODE.NXDOMAIN
        return reply, "NXDOMAIN"


def handle(zone, data, udp):
    try:
        request = DNSRecord.parse(data)
    except Exception as e:  # not DNS: ignore, like a real server
        print(f"bad query: {e}", flush=True)
        return None
    reply, result = zone.answer(request)
    print(f"query {request.q.qname} {QTYPE.get(request.q.qtype)} -> {result}", flush=True)
    if reply is None:
        return None
    packed = reply.pack()
    if udp and len(packed) > 512:
        packed = reply.truncate().pack()
    return packed


class Udp(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out = handle(self.zone, data, udp=True)
        if out is not None:
            self.transport.sendto(out, addr)


async def serve(args, zone):
    loop = asyncio.get_running_loop()

    async def tcp_client(reader, writer):
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                out = handle(zone, await reader.readexactly(length), udp=False)
                if out is not None:
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    transport, _ = await loop.create_datagram_endpoint(lambda: Udp(zone), local_addr=(args.listen, args.port))
    tcp = await asyncio.start_server(tcp_client, args.listen, args.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = len(zone.records) + len(zone.behaviours)
    print(f"dns: listening on {args.listen}:{args.port} (udp+tcp), {names} names", flush=True)
    await stop.wait()
    transport.close()
    tcp.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5353)
    p.add_argument("--zone", action="append", default=[], help="zone description file (repeatable)")
    p.add_argument("--rr", action="append", default=[], help="one zone line (repeatable)")
    args = p.parse_args()
    text = "\n".join([open(f).read() for f in args.zone] + args.rr)
    try:
        zone = Zone(text)
    except Exception as e:
        sys.exit(f"dns: bad zone data: {e}")
    asyncio.run(serve(args, zone))


if __name__ == "__main__":
    main()
