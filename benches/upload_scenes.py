"""Put N copies of the six example scenes under `photos/img-NNNNNN.png` in a new bucket of the
dev MinIO (FUSIONSTREAM_TEST_S3_ENDPOINT): the objects of the backfill benchmarks.

Usage (repository root): python benches/upload_scenes.py BUCKET N"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3

bucket, n = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
s3.create_bucket(Bucket=bucket)
scenes = [open(f"examples/media/scene{i}.png", "rb").read() for i in range(6)]
with ThreadPoolExecutor(16) as ex:
    list(ex.map(lambda i: s3.put_object(Bucket=bucket, Key=f"photos/img-{i:06d}.png", Body=scenes[i % 6]), range(n)))
