#!/usr/bin/env python3
"""Small S3 chores for tests/s3.rs and benches/s3.sh, with boto3 (which moto brings).
  s3util.py ENDPOINT mkbucket BUCKET
  s3util.py ENDPOINT keys BUCKET [PREFIX]        one key per line
  s3util.py ENDPOINT uploads BUCKET              multipart uploads not finished
  s3util.py ENDPOINT put BUCKET KEY FILE
Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default: test / test)."""
import os
import sys

import boto3
from botocore.config import Config

endpoint, cmd, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    config=Config(s3={"addressing_style": "path"}),
)
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "keys":
    prefix = sys.argv[4] if len(sys.argv) > 4 else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            print(o["Key"])
elif cmd == "uploads":
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        print(u["Key"], u["UploadId"])
elif cmd == "put":
    with open(sys.argv[5], "rb") as f:
        s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=f.read())
else:
    sys.exit("unknown command " + cmd)
