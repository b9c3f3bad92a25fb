"""The relay under a Lambda Runtime API keeps its batch invisible while it runs: the queue's
visibility timeout is 4 s, the destination holds its 250 for 9 s, and the job, received the way
the SQS event source mapping receives it, never becomes visible to another consumer meanwhile.
"""

import concurrent.futures
import json
import time

from harness import wait_until
from test_relay_e2e import MESSAGE, lambda_runtime_api, make_job  # noqa: F401  (fixture)

VISIBILITY_S = 4
HOLD_S = 9


def test_a_batch_outlasting_the_visibility_timeout_stays_invisible(
        dns_server, capture_server, loopback_hosts, spool, start_process, lambda_runtime_api):  # noqa: F811
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port, data_delay=HOLD_S)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": str(VISIBILITY_S)})
    spool.send_job(make_job(spool, "example.test", ["bob@example.test"]))
    [msg] = wait_until(lambda: spool.sqs.receive_message(QueueUrl=spool.queue_url, WaitTimeSeconds=1).get("Messages"),
                       10, what="the job, received as the event source mapping receives it")
    received = time.monotonic()
    record = {"eventSource": "aws:sqs", "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {},
              "messageId": msg["MessageId"], "receiptHandle": msg["ReceiptHandle"], "body": msg["Body"]}
    start_process("relay", name="relay-lambda", env={
        **spool.env, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port), "RELAY_HELO_NAME": "relay.example.test",
        "AWS_LAMBDA_RUNTIME_API": lambda_runtime_api.addr, "AWS_LAMBDA_FUNCTION_NAME": "relay",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    })
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        invocation = pool.submit(lambda_runtime_api.invoke, {"Records": [record]})
        seen = []
        while not invocation.done():
            seen.append((time.monotonic() - received, spool.counts()["visible"]))
            time.sleep(0.5)
        kind, body = invocation.result()
    assert (kind, body) == ("response", {"batchItemFailures": []})
    assert max(t for t, _ in seen) > 2 * VISIBILITY_S, "the batch outlasted the visibility timeout twice"
    assert [(t, v) for t, v in seen if v] == [], "visible to another consumer while it was being delivered"
    [m] = mx.wait_for(1, timeout=5)
    assert m["data"] == MESSAGE
    # The event source mapping deletes the batch with the receipt handle it got: still valid.
    spool.sqs.delete_message(QueueUrl=spool.queue_url, ReceiptHandle=msg["ReceiptHandle"])
    assert json.loads(msg["Body"])["queue_id"] and spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}
