"""Secrets never reach the logs: a real server process with bearer tokens and every Python
logger at DEBUG serves authenticated and rejected calls; its captured output must not
contain any token — neither the accepted ones nor the wrong one a client presented (a
rejected token may be a real secret of another environment).

Scope: Tandem's and the libraries' *Python* logging at DEBUG, plus gRPC core at
``GRPC_VERBOSITY=DEBUG``. gRPC core's opt-in wire tracers (``GRPC_TRACE=http``…) dump raw
headers by design; they are a debugging tool for a developer's machine and are not covered.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tandem_testing.infra import free_port
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import retriever_pb2, retriever_pb2_grpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

_LAUNCH = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from tandem_app.cli import main; sys.argv = ['tandem', *sys.argv[1:]]; main()"
)


def test_tokens_never_appear_in_debug_logs(tmp_path: Path) -> None:
    file_token, env_token, wrong_token = (f"tk-{name}-{secrets.token_hex(16)}" for name in ("file", "env", "wrong"))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# accepted client tokens\n{file_token}\n")
    items = tmp_path / "items.jsonl"
    items.write_text("".join(i.model_dump_json() + "\n" for i in tiny_catalog()))
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TANDEM_AUTH_TOKENS": env_token, "GRPC_VERBOSITY": "DEBUG", "PYTHONUNBUFFERED": "1"}
    env.pop("GRPC_TRACE", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, "serve", "generative", "--factory",
             "tandem_testing.term_overlap:from_jsonl", "--factory-arg", str(items), "--port", str(port),
             "--auth-token-file", str(tokens), "--log-level", "DEBUG"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            request = retriever_pb2.RetrieveRequest(queries=["claw hammer"], k=3)
            outcomes = {}
            for label, token in (("file", file_token), ("env", env_token), ("wrong", wrong_token), ("none", None)):
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    reply = stub.Retrieve(request, timeout=10, metadata=metadata)
                    outcomes[label] = reply.results[0].hits[0].item_id
                except grpc.RpcError as e:
                    outcomes[label] = e.code().name
            # A malformed header (no "Bearer ") must not be echoed either.
            try:
                stub.Retrieve(request, timeout=10, metadata=(("authorization", wrong_token),))
            except grpc.RpcError as e:
                outcomes["raw"] = e.code().name
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert outcomes == {"file": "t09", "env": "t09", "wrong": "UNAUTHENTICATED", "none": "UNAUTHENTICATED",
                        "raw": "UNAUTHENTICATED"}
    text = log.read_text(errors="replace")
    assert "DEBUG" in text and '"code": "UNAUTHENTICATED"' in text, text[-3000:]  # it did log, at DEBUG, per call
    for token in (file_token, env_token, wrong_token):
        assert token not in text
        assert token[-16:] not in text  # nor a recognisable fragment
