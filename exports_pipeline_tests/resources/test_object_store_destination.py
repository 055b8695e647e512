"""Destination parsing and validation, and that the secret key never shows."""

from __future__ import annotations

import pickle

import pytest

from exports_pipeline.errors import ConfigError
from exports_pipeline.resources.object_store import Destination, S3ObjectStore

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_s3_url_with_options():
    dest = Destination.from_url("s3://my-bucket/exports/langfuse/", endpoint_url="https://minio.local:9000/",
                                region="eu-west-1", force_path_style=True, access_key_id="AKIAEXAMPLE",
                                secret_access_key=SECRET, sse="aws:kms", sse_kms_key_id="alias/exports")
    assert (dest.scheme, dest.bucket, dest.prefix) == ("s3", "my-bucket", "exports/langfuse/")
    assert dest.endpoint_url == "https://minio.local:9000"
    assert dest.region == "eu-west-1" and dest.force_path_style and dest.sse == "aws:kms"
    assert dest.secret_access_key.get_secret_value() == SECRET
    assert dest.uri("exports/langfuse/a.csv") == "s3://my-bucket/exports/langfuse/a.csv"
    assert dest.key_for("a.csv") == "exports/langfuse/a.csv"
    assert dest.url == "s3://my-bucket/exports/langfuse/"


def test_s3_url_defaults():
    for url in ("s3://bucket", "s3://bucket/"):
        dest = Destination.from_url(url)
        assert (dest.bucket, dest.prefix, dest.region, dest.endpoint_url) == ("bucket", "", "us-east-1", None)
        assert dest.access_key_id is None and dest.secret_access_key is None and dest.sse is None


def test_file_url(tmp_path):
    dest = Destination.from_url(f"file://{tmp_path}/")
    assert (dest.scheme, dest.bucket, dest.prefix) == ("file", str(tmp_path), "")
    assert dest.uri("p/a b.csv") == (tmp_path / "p/a b.csv").as_uri()
    assert Destination.from_url(dest.url) == dest
    assert Destination.from_url("file:///srv/with%20space/").bucket == "/srv/with space"
    assert Destination.from_url("file://localhost/srv/x").bucket == "/srv/x"


@pytest.mark.parametrize("url, field", [
    ("s3://bucket/prefix-without-slash", "prefix"),
    ("s3://bucket//starts-with-slash/", "prefix"),
    ("s3://b/", "bucket"),
    ("s3://bad bucket/", "bucket"),
    ("s3:///prefix/", "bucket"),
    ("s3://key:secret@bucket/", "url"),
    ("s3://AKIA:" + SECRET + "@bucket/", "url"),
    ("gs://bucket/", "url"),
    ("http://bucket/", "url"),
    ("bucket/prefix/", "url"),
    ("file://relative/dir/", "url"),
    ("file:relative/dir", "url"),
    ("file:///dir/?x=1", "url"),
])
def test_bad_urls_are_config_errors_naming_the_field(url, field):
    with pytest.raises(ConfigError) as error:
        Destination.from_url(url)
    assert error.value.field == field
    assert isinstance(error.value, ValueError)
    assert "secret" not in str(error.value) and SECRET not in str(error.value)


@pytest.mark.parametrize("endpoint, why", [
    ("ftp://minio.local", "http or https"),
    ("http://user:pw@minio.local:9000", "must not contain credentials"),
    ("https://AKIA:" + SECRET + "@s3.example.com", "must not contain credentials"),
    ("http://", "no host"),
    ("http:///bucket", "no host"),
    ("minio.local:9000", "http or https"),
    ("http://minio.local:notaport", "not a valid URL"),
    ("http://minio.local/?x=1", "query or fragment"),
    ("http://minio.local/#frag", "query or fragment"),
])
def test_bad_endpoints_are_config_errors(endpoint, why):
    with pytest.raises(ConfigError, match=why) as error:
        Destination.from_url("s3://bucket/", endpoint_url=endpoint)
    assert error.value.field == "endpoint_url"
    assert "pw@" not in str(error.value) and SECRET not in str(error.value)


@pytest.mark.parametrize("opts, field", [
    ({"access_key_id": "AKIA"}, "secret_access_key"),
    ({"secret_access_key": SECRET}, "access_key_id"),
    ({"sse_kms_key_id": "alias/k"}, "sse_kms_key_id"),
    ({"sse": "aws:kms", "sse_kms_key_id": 5}, "sse_kms_key_id"),
    ({"sse": "DES"}, "sse"),
    ({"region": "us east"}, "region"),
    ({"prefix": "x/"}, "prefix"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_options_are_config_errors(opts, field):
    with pytest.raises(ConfigError) as error:
        Destination.from_url("s3://bucket/", **opts)
    assert error.value.field == field
    assert SECRET not in str(error.value)


def test_file_destinations_refuse_s3_only_options(tmp_path):
    with pytest.raises(ConfigError, match="only apply to s3") as error:
        Destination.from_url(tmp_path.as_uri(), endpoint_url="http://minio:9000")
    assert error.value.field == "endpoint_url"
    with pytest.raises(ConfigError):
        Destination(scheme="file", bucket="relative/dir")


def test_secret_never_shows():
    dest = Destination.from_url("s3://bucket/p/", access_key_id="AKIAEXAMPLE", secret_access_key=SECRET)
    for text in (repr(dest), str(dest), repr(dest.model_dump()), str(dest.model_dump()),
                 dest.model_dump_json(), repr(dest.model_dump(mode="json")), dest.url):
        assert SECRET not in text
    assert "AKIAEXAMPLE" in repr(dest)  # the key id is not a secret and helps debugging
    assert pickle.loads(pickle.dumps(dest)).secret_access_key.get_secret_value() == SECRET
    for bad in ({"region": "bad region!"}, {"sse": "nope"}, {"endpoint_url": "ftp://x"}):
        with pytest.raises(ConfigError) as error:
            Destination.from_url("s3://bucket/", access_key_id="AKIA", secret_access_key=SECRET, **bad)
        assert SECRET not in str(error.value) and SECRET not in repr(error.value)
        assert error.value.__cause__ is None and error.value.__context__ is None or \
            SECRET not in str(error.value.__context__)
    with pytest.raises(ConfigError) as error:
        Destination(scheme="s3", bucket="bucket", secret_access_key=SECRET, access_key_id="A", sse=SECRET)
    assert SECRET not in str(error.value)


def test_store_errors_do_not_echo_the_secret():
    """A server that echoes the secret (some do, in SignatureDoesNotMatch details) is scrubbed."""
    from botocore.exceptions import ClientError

    dest = Destination.from_url("s3://bucket/", access_key_id="AKIA", secret_access_key=SECRET,
                                endpoint_url="http://127.0.0.1:9")
    store = S3ObjectStore(dest)
    echoed = ClientError({"Error": {"Code": "SignatureDoesNotMatch", "Message": f"you signed with {SECRET}"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")

    def fail():
        raise echoed

    with pytest.raises(Exception) as error:
        store.call("PutObject", "k", fail)
    assert "SignatureDoesNotMatch" in str(error.value) and SECRET not in str(error.value)
    assert error.value.__cause__ is None and error.value.__context__ is None
    store.close()


def test_destinations_are_immutable():
    dest = Destination.from_url("s3://bucket/")
    with pytest.raises(Exception):
        dest.bucket = "other"  # type: ignore[misc]


def test_blank_optional_fields_mean_not_set():
    dest = Destination(scheme="s3", bucket="bucket", endpoint_url="", access_key_id="", secret_access_key="",
                       sse="", sse_kms_key_id="")
    assert (dest.endpoint_url, dest.access_key_id, dest.secret_access_key, dest.sse, dest.sse_kms_key_id) == (
        None, None, None, None, None)
