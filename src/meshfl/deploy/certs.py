"""TLS certificates and SuperNode authentication keys for Flower's own flags.

Flower 1.42's SuperLink serves Control, Fleet and Runtime APIs on one HTTPS port:

* ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile
  server.key``: the server certificate must name every address clients dial (SANs); the
  SuperLink's own SuperExec dials its bind address (``127.0.0.1`` on loopback) and
  verifies it against ``ca.crt``;
* ``flower-supernode --root-certificates ca.crt`` and ``root-certificates`` in the ``flwr``
  CLI connection (:func:`meshfl.deploy.write_flower_config`) verify it.

SuperNode authentication (``flower-superlink --enable-supernode-auth``, which needs TLS):
each SuperNode holds an EC key pair on a NIST curve in OpenSSH format; it signs its Fleet
requests with ``flower-supernode --auth-supernode-private-key <key>``, and its public key
must be registered with the SuperLink *before* it connects, through the Control API:
``flwr supernode register <key>.pub <connection>``. An unregistered key is refused (HTTP
401 / node activation fails).

:func:`generate_tls` and :func:`generate_supernode_keys` make these files with the
``cryptography`` package (no ``openssl`` binary needed). Private keys are written with
mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SupernodeKeys", "TLSFiles", "generate_supernode_keys", "generate_tls"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """The files :func:`generate_tls` wrote."""

    ca_cert: Path
    """CA certificate: ``--ssl-ca-certfile``, ``--root-certificates``, CLI ``root-certificates``."""
    ca_key: Path
    """CA private key: keep it offline; it signs server certificates."""
    server_cert: Path
    """SuperLink certificate: ``--ssl-certfile``."""
    server_key: Path
    """SuperLink private key: ``--ssl-keyfile``."""


@dataclass(frozen=True)
class SupernodeKeys:
    """A SuperNode's authentication key pair (OpenSSH format, ECDSA on NIST P-384)."""

    private: Path
    """``flower-supernode --auth-supernode-private-key``; stays on the MSP."""
    public: Path
    """``flwr supernode register <public> <connection>``, by the SuperLink's operator."""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, start: dt.datetime, end: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate that may sign server certificates only (path length 0)."""
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )


def generate_tls(
    out_dir: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 365,
    common_name: str = "meshfl coordinator",
) -> TLSFiles:
    """Write a CA and a SuperLink server certificate it signs, for ``hosts``.

    Parameters
    ----------
    out_dir : path
        Receives ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` (created if missing).
    hosts : sequence of str
        Names and IP addresses the SuperLink is reached at (the certificate's SANs).
    days : int
        Validity of both certificates.
    common_name : str
        Subject common name of the server certificate.
    """
    if not hosts:
        raise ValueError("generate_tls needs at least one host for the server certificate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca_cert = _ca_certificate(ca_key, ca_name, start, end)

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )

    files = TLSFiles(
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _pem_key(ca_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_key, _pem_key(server_key))
    return files


def generate_supernode_keys(
    private_path: str | os.PathLike[str], *, comment: str = ""
) -> SupernodeKeys:
    """Write a SuperNode's key pair: ``private_path`` and ``private_path + ".pub"``.

    The same format ``ssh-keygen -t ecdsa -b 384 -N ""`` writes, which is what
    ``flower-supernode`` and ``flwr supernode register`` load.
    """
    private = Path(private_path)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = private.with_name(private.name + ".pub")
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public.write_bytes(line + (f" {comment}".encode() if comment else b"") + b"\n")
    return SupernodeKeys(private=private, public=public)
