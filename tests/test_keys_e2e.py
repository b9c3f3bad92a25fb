"""The spool's key layout end to end: messages the ingress stores spread over hashed folders
(`spool/<hh>/<queue id>.eml`, hh = the first byte of SHA-256(queue id), as docs/architecture.md
says: computed here independently), and a message stored under the layout before it
(`spool/<queue id>.eml`) is still found by the relay and by relayctl — an upgrade in place loses
nothing — and `relayctl queue` still names the oldest message although keys no longer sort by
time across folders.
"""

import hashlib
import json
import os
import time

from harness import legacy_message_key, message_key, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)
from test_relay_e2e import queue_drained, start_relay
from test_relayctl_e2e import ctl_json, relayctl, send

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_at(ms):
    n = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def folder(queue_id):
    return hashlib.sha256(queue_id.encode()).hexdigest()[:2]


def test_the_ingress_spreads_message_keys_over_hashed_folders(ingress, spool):  # noqa: F811
    server = ingress()
    qids = [send(server, ["bob@example.test"]) for _ in range(24)]
    keys = spool.keys("spool/")
    assert sorted(keys) == sorted(message_key(q) for q in qids), "the documented layout"
    assert all(k.startswith(f"spool/{folder(q)}/") for k, q in zip(map(message_key, qids), qids))
    assert len({k.split("/")[1] for k in keys}) >= 16, "24 messages made within seconds land in many folders"
    assert sorted(j["message_key"] for j in spool.receive_jobs()) == sorted(keys), "each job names its key"


def purge(spool, key):
    """Remove every version of `key` (an object that was never there)."""
    out = spool.s3.list_object_versions(Bucket=spool.bucket, Prefix=key)
    for v in out.get("Versions", []) + out.get("DeleteMarkers", []):
        spool.s3.delete_object(Bucket=spool.bucket, Key=v["Key"], VersionId=v["VersionId"])


def as_if_stored_by_an_older_ingress(spool, qid):
    """Move `qid`'s message to the old layout (CopyObject keeps its metadata) and point its queued
    job at it: what an ingress from before the hashed layout left behind."""
    old = legacy_message_key(qid)
    spool.s3.copy_object(Bucket=spool.bucket, Key=old, CopySource={"Bucket": spool.bucket, "Key": message_key(qid)})
    purge(spool, message_key(qid))
    jobs = []
    while len(jobs) < 2:
        got = spool.sqs.receive_message(QueueUrl=spool.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            spool.sqs.delete_message(QueueUrl=spool.queue_url, ReceiptHandle=m["ReceiptHandle"])
            jobs.append(json.loads(m["Body"]))
    for job in jobs:
        if job["queue_id"] == qid:
            job["message_key"] = old
        spool.send_job(job)
    return old


def test_a_message_under_the_old_layout_is_delivered_shown_and_traced(
        ingress, dns_server, capture_server, loopback_hosts, spool, start_process):  # noqa: F811
    server = ingress()
    old_qid = send(server, ["old@example.test"])
    new_qid = send(server, ["new@example.test"])
    old_key = as_if_stored_by_an_older_ingress(spool, old_qid)
    assert spool.keys("spool/") == sorted([old_key, message_key(new_qid)])
    stored = spool.get(old_key)

    assert ctl_json(spool, "queue")["oldest_queue_id"] == old_qid
    assert relayctl(spool, "show", old_qid).stdout == stored
    trace = ctl_json(spool, "trace", old_qid)
    assert [(r["address"], r["state"]) for r in trace["recipients"]] == [("old@example.test", "queued")]

    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    start_relay(start_process, spool, dns, port)
    got = mx.wait_for(2, timeout=60)
    assert sorted(r for m in got for r in m["rcpt_tos"]) == ["new@example.test", "old@example.test"]
    wait_until(lambda: queue_drained(spool) and spool.keys("spool/") == [], 30,
               what="both completed: each message deleted where it was")
    # Deleted, still readable from its version: relayctl finds the old key's.
    assert relayctl(spool, "show", old_qid).stdout == stored
    assert [r["state"] for r in ctl_json(spool, "trace", old_qid)["recipients"]] == ["sent"]
    assert ctl_json(spool, "queue")["oldest_queue_id"] is None


def test_relayctl_queue_names_the_oldest_message_whichever_folder_it_is_in(spool):
    """Two pending messages whose keys sort the other way round from their age (and an old-layout
    one younger than both): the oldest is still the one named."""
    now = int(time.time() * 1000)
    oldest = next(q for q in iter(lambda: ulid_at(now - 60_000), None) if folder(q) >= "c0")
    younger = next(q for q in iter(lambda: ulid_at(now - 30_000), None) if folder(q) < "40")
    youngest = ulid_at(now - 10_000)
    for key in (message_key(oldest), message_key(younger), legacy_message_key(youngest)):
        spool.put(key, b"Subject: waiting\r\n\r\n.\r\n")
    assert spool.keys("spool/")[0] != message_key(oldest), "S3's first key is not the oldest message"
    q = ctl_json(spool, "queue")
    assert q["oldest_queue_id"] == oldest and 59 <= q["oldest_age_s"] <= 120, q
    spool.s3.delete_object(Bucket=spool.bucket, Key=message_key(oldest))
    assert ctl_json(spool, "queue")["oldest_queue_id"] == younger
