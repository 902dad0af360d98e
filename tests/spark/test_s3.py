"""s3:// buckets under prio-spark: passed to Spark as s3a:// with each bucket's endpoint and keys in
the Hadoop configuration. The S3A connector (hadoop-aws and the AWS SDK, from Maven) is not
available here: the tests go as far as Spark's refusal of the s3a scheme, with a clear line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from prio_processor.spark import session
from prio_processor.spark.commands import entry_point
from prio_processor.storage import location

from .test_options import CASE, _env


def test_s3_paths_become_s3a_and_buckets_get_their_own_settings(s3, s3_servers, monkeypatch):
    b = s3_servers["b"]
    s3(b_private=("b", "admin"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert session.hadoop_path("s3://b-private/x/raw") == "s3a://b-private/x/raw"
    assert session.hadoop_path("gs://b-private/x") == "gs://b-private/x"
    assert session.hadoop_path("/data/s3://x") == "/data/s3://x"
    prefix = "fs.s3a.bucket.b-private."
    assert session.s3a_settings() == {
        "fs.s3a.endpoint": "http://127.0.0.1:9",
        "fs.s3a.path.style.access": "true",
        prefix + "endpoint": b.endpoint,
        prefix + "path.style.access": "true",
        prefix + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        prefix + "access.key": b.access_key("admin"),
        prefix + "secret.key": b.secret_file("admin").read_text().strip(),
    }


@pytest.mark.spark
def test_a_stage_on_s3_configures_s3a_and_says_what_is_missing(spark, s3, s3_servers, tmp_path):
    b = s3_servers["b"]
    prefix = s3(b_private=("b", "admin"))
    raw = f"s3://b-private/{prefix}/raw"
    location(f"{raw}/part-00000.json").write_bytes(CASE.raw_path("A").read_bytes())
    env = {**_env(tmp_path), "INPUT": raw, "OUTPUT": f"s3://b-private/{prefix}/verify1"}
    secret = b.secret_file("admin").read_text().strip()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    try:
        result = CliRunner().invoke(entry_point, ["verify1"], env=env)
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1] == (
            f"Error: --input: cannot use {raw}: {session.S3A_HINT}"
        )
        assert secret not in result.output
        # What S3A would have used: this bucket's endpoint and keys, set in the session itself.
        assert hadoop.get("fs.s3a.bucket.b-private.endpoint") == b.endpoint
        assert hadoop.get("fs.s3a.bucket.b-private.access.key") == b.access_key("admin")
        assert hadoop.get("fs.s3a.bucket.b-private.secret.key") == secret
        assert hadoop.get("fs.s3a.bucket.b-private.path.style.access") == "true"
    finally:
        for key in session.s3a_settings():
            hadoop.unset(key)
