"""``flowfed server --ssl-certfile --ssl-keyfile``: HTTPS with a self-signed certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server.conftest import flowfed, project_env


def self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'flowfed.db'}"
    env = project_env(tmp_path, url)
    flowfed(tmp_path, env, "db", "upgrade")
    return tmp_path, env


def test_the_server_serves_https(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    cert, key = self_signed(root)
    log = open(root / "server.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "flowfed", "server", "--port", "0"),
            *("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        url = ""
        while not url:
            text = (root / "server.out").read_text()
            if "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            assert proc.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trust, timeout=10) as c:
            while True:
                try:
                    r = c.get(f"{url}/health")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
        # Without trusting the certificate, the client refuses it.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=10)
        # Plain HTTP gets no answer from a TLS port.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/health", timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_missing_or_mismatched_tls_files_stop_the_server(
    project: tuple[Path, dict[str, str]],
) -> None:
    root, env = project
    cert, key = self_signed(root)
    other_cert, _ = self_signed(root, "other")

    def refused(*args: str) -> str:
        res = flowfed(root, env, "server", "--port", "0", *args, check=2)
        assert "Traceback" not in res.stderr
        return res.stderr

    assert "cannot read --ssl-certfile 'missing.crt'" in refused(
        "--ssl-certfile", "missing.crt", "--ssl-keyfile", str(key)
    )
    assert "cannot read --ssl-keyfile 'missing.key'" in refused(
        "--ssl-certfile", str(cert), "--ssl-keyfile", "missing.key"
    )
    assert "both --ssl-certfile and --ssl-keyfile" in refused("--ssl-certfile", str(cert))
    assert "cannot use the TLS certificate" in refused(
        "--ssl-certfile", str(other_cert), "--ssl-keyfile", str(key)
    )
