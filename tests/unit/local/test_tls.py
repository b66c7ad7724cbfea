"""The test CA and the certificates it issues, checked with openssl itself (no sockets)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pulse.local import tls


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(
    "hosts, san",
    [(("127.0.0.1", "localhost"), "IP:127.0.0.1,DNS:localhost"), (("::1",), "IP:::1"),
     (("kafka-0.kafka", "10.0.0.7"), "DNS:kafka-0.kafka,IP:10.0.0.7")],
)  # fmt: skip
def test_san_names_addresses_as_ip_and_names_as_dns(hosts: tuple[str, ...], san: str) -> None:
    assert tls.san(hosts) == san


def test_an_issued_certificate_verifies_against_the_ca_for_the_broker_address(
    tmp_path: Path,
) -> None:
    ca = tls.make_ca(tmp_path / "ca")
    issued = tls.issue(ca, tmp_path / "broker", "broker")
    assert "OK" in openssl("verify", "-CAfile", str(ca.cert), str(issued.cert))
    text = openssl("x509", "-in", str(issued.cert), "-noout", "-text")
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    assert "CA:TRUE" in openssl("x509", "-in", str(ca.cert), "-noout", "-text")
    # Kafka's PEM keystore wants an unencrypted PKCS#8 key followed by the chain
    assert issued.keystore.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert issued.keystore.stat().st_mode & 0o077 == 0 and ca.key.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (tmp_path / "broker").iterdir()) == [
        "broker.crt", "broker.key", "broker.keystore.pem"
    ]  # fmt: skip


def test_a_missing_openssl_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(tls.TlsError, match=r"openssl.*not found"):
        tls.make_ca(tmp_path / "ca")
