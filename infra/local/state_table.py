"""The state table (STATE_TABLE) on moto's server: DynamoDB for the local stack and the tests.

Owns the table's shape as the template makes it — partition key `pk` (S), sort key `sk` (S),
TTL on `ttl`, on-demand billing — and starting moto's server (from its own venv: MOTO_SERVER,
set by env.sh). Used by infra/local/setup.sh (--check), infra/local/run and tests/harness.py.

    python infra/local/state_table.py --check MOTO_SERVER    # start it, prove DynamoDB works
    python infra/local/state_table.py create ENDPOINT NAME   # create the table (idempotent)
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request


def client(endpoint, region=None):
    """A boto3 DynamoDB client on `endpoint` with the local fake credentials."""
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region or os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def create_table(ddb, name):
    """Create the state table (or keep the one that exists) with TTL on `ttl`."""
    try:
        ddb.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ddb.exceptions.ResourceInUseException:
        return
    ddb.get_waiter("table_exists").wait(TableName=name)
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})


def delete_table(ddb, name):
    try:
        ddb.delete_table(TableName=name)
    except Exception:
        pass


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(server, host, port, log):
    """Start moto's server on host:port writing to the open file `log`; returns (Popen, endpoint)
    once it answers."""
    proc = subprocess.Popen([server, "-H", host, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return proc, endpoint
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto's server ({server}) did not start on {endpoint}")
            time.sleep(0.2)


def check(server):
    """Start the server, make a table, do a conditional put twice (the second must fail)."""
    port = free_port()
    with open(os.devnull, "w") as log:
        proc, endpoint = start(server, "127.0.0.1", port, log)
    try:
        ddb = client(endpoint)
        create_table(ddb, "setup-check")
        item = {"pk": {"S": "check"}, "sk": {"S": "-"}, "ttl": {"N": "1"}}
        ddb.put_item(TableName="setup-check", Item=item, ConditionExpression="attribute_not_exists(pk)")
        try:
            ddb.put_item(TableName="setup-check", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ddb.exceptions.ConditionalCheckFailedException:
            return 0
        print("moto: a conditional put did not fail", file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        return check(argv[2])
    if len(argv) == 4 and argv[1] == "create":
        create_table(client(argv[2]), argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
