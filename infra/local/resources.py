"""Spool resources on LocalStack: a bucket, a job queue and its dead-letter queue.

Owns the shape of the local spool (used by create-resources.sh and tests/conftest.py):
the queue redrives to ``<queue>-dlq`` after 5 receives, like the deployed queue.

    python infra/local/resources.py [bucket] [queue]   # prints SPOOL_BUCKET=... lines
"""

import json
import os
import sys

MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT = 60  # seconds a received job stays hidden from other consumers


def clients(endpoint=None, region=None):
    """boto3 S3 and SQS clients for LocalStack (path-style S3, fake credentials)."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    kw = dict(
        endpoint_url=endpoint,
        region_name=region or os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
    sqs = boto3.client("sqs", **kw)
    return s3, sqs


def create_spool(s3, sqs, bucket, queue):
    """Create (or reuse) the bucket (versioned, like the deployed one: a completed message stays
    readable behind its delete marker), the queue and its DLQ; returns (queue_url, dlq_url)."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    dlq_url = sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": str(VISIBILITY_TIMEOUT)},
    )["QueueUrl"]
    return queue_url, dlq_url


def delete_spool(s3, sqs, bucket, queue_urls):
    """Best-effort removal of everything create_spool made."""
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                    for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    except Exception:
        pass
    for url in queue_urls:
        try:
            sqs.delete_queue(QueueUrl=url)
        except Exception:
            pass


def main(argv):
    bucket = argv[1] if len(argv) > 1 else "relay-spool"
    queue = argv[2] if len(argv) > 2 else "relay-jobs"
    s3, sqs = clients()
    queue_url, dlq_url = create_spool(s3, sqs, bucket, queue)
    print(f"SPOOL_BUCKET={bucket}")
    print(f"SPOOL_QUEUE_URL={queue_url}")
    print(f"SPOOL_DLQ_URL={dlq_url}")


if __name__ == "__main__":
    main(sys.argv)
