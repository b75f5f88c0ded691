"""moto's server for the AWS tests: started in-process (``ThreadedMotoServer``) on a free port of 127.0.0.1.

boto3 talks to it over real HTTP. Use :func:`running_moto` once per session and :meth:`MotoServer.reset`
before each test (``POST /moto-api/reset`` wipes every backend). :func:`aws_test_env` sets fake credentials
and removes everything that could point boto3 at a real account.

As pytest fixtures (import them into a test module or a conftest)::

    from tests.servers.moto_server import moto_server, moto  # noqa: F401
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: what boto3 sees while the fixtures run: fake credentials, no config files, no metadata service
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: removed while the fixtures run, so nothing points at a real account or a real Lambda
CLEARED_ENV_PREFIXES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_LAMBDA_",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_",
    "ROTATOR_LAMBDA_ARN",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """A running moto server: ``url``, ``reset()``, ``configure(...)``, ``stop()``."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        # ThreadedMotoServer takes a port, so pick a free one; werkzeug binds it at once
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    def _post(self, path: str, body: bytes = b"") -> None:
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def reset(self) -> None:
        """Wipe every moto backend (all accounts, all regions)."""
        self._post("/moto-api/reset")

    def configure(self, config: dict[str, object]) -> None:
        """moto's runtime config, e.g. ``{"lambda": {"use_docker": False}}`` (Lambda functions that do nothing)."""
        self._post("/moto-api/config", json.dumps(config).encode())

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def aws_test_env() -> Iterator[None]:
    """Fake AWS credentials and region; restores the environment afterwards."""
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith(CLEARED_ENV_PREFIXES):
                del os.environ[key]
        os.environ.update(TEST_ENV)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    """Start moto on 127.0.0.1 with the test environment; stop it afterwards."""
    with aws_test_env():
        server = MotoServer()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session."""
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto server, wiped before the test."""
    moto_server.reset()
    return moto_server


def point_rotation_at_lambda(server: MotoServer, secret: str, name: str, region: str = "us-east-1") -> str:
    """Create a do-nothing moto Lambda ``name`` and make it ``secret``'s native rotation function; its ARN.

    moto refuses ``rotate_secret`` while AWSPENDING sits on the AWSCURRENT version (AWS documents that state as
    a finished rotation), so the label is taken off first.
    """
    import io
    import zipfile

    import boto3

    server.configure({"lambda": {"use_docker": False}})
    iam = boto3.client("iam", region_name=region, endpoint_url=server.url)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return None\n")
    fn = boto3.client("lambda", region_name=region, endpoint_url=server.url).create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="index.handler", Code={"ZipFile": code.getvalue()}
    )["FunctionArn"]
    raw = boto3.client("secretsmanager", region_name=region, endpoint_url=server.url)
    for vid, labels in raw.describe_secret(SecretId=secret).get("VersionIdsToStages", {}).items():
        if "AWSPENDING" in labels:
            raw.update_secret_version_stage(SecretId=secret, VersionStage="AWSPENDING", RemoveFromVersionId=vid)
    raw.rotate_secret(
        SecretId=secret, RotationLambdaARN=fn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False
    )
    return str(fn)
