"""Throwaway TLS material for a local secured broker: a CA and certificates it signs.

Made with the ``openssl`` command line (no Python crypto dependency), as PEM files: what
librdkafka (``ssl.ca.location``), Python's ``ssl`` (faust) and Kafka itself (``PEM`` key and
trust stores, KIP-651) all read. Keys are unencrypted: they live in a test's or an
instance's own directory and are thrown away with it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOSTS = ("127.0.0.1", "localhost")  # what the embedded broker advertises


class TlsError(RuntimeError):
    """openssl is missing or refused; the message says what to do."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA's certificate and private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Issued:
    """A certificate signed by a CA, its key, and one PEM holding key + chain (a Kafka keystore)."""

    cert: Path
    key: Path
    keystore: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("`openssl` not found on PATH: install it (apt-get install openssl).")
    proc = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TlsError(f"openssl {args[0]} failed: {detail[-1] if detail else proc.returncode}")


def san(hosts: tuple[str, ...]) -> str:
    """``subjectAltName`` value for ``hosts``: IP entries for addresses, DNS for names.

    Clients check the name they connected to against these (librdkafka's and Python's
    hostname verification are on by default), and the broker is reached as ``127.0.0.1``.
    """
    entries = []
    for host in hosts:
        kind = "IP" if host.replace(".", "").isdigit() or ":" in host else "DNS"
        entries.append(f"{kind}:{host}")
    return ",".join(entries)


def make_ca(
    directory: Path, name: str = "stocktwits-pulse test CA", days: int = 7
) -> CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca.crt``, ``ca.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory / "ca.crt", directory / "ca.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(days),
             "-subj", f"/CN={name}", "-keyout", str(ca.key), "-out", str(ca.cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    ca.key.chmod(0o600)
    return ca


def issue(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
    days: int = 7,
) -> Issued:
    """A server (and client) certificate for ``hosts``, signed by ``ca``, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={san(hosts)}\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-sha256", "-in", str(csr), "-CA", str(ca.cert),
             "-CAkey", str(ca.key), "-set_serial", str(_serial()), "-days", str(days),
             "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    key.chmod(0o600)
    keystore = directory / f"{name}.keystore.pem"
    # Kafka's PEM keystore: an unencrypted PKCS#8 key (what openssl 3 writes) + the chain
    keystore.write_text(key.read_text() + cert.read_text() + ca.cert.read_text())
    keystore.chmod(0o600)
    csr.unlink()
    ext.unlink()
    return Issued(cert, key, keystore)


def _serial() -> int:
    import secrets

    return secrets.randbits(63) | 1  # positive, never 0: serials must be unique per CA
