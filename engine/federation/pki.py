"""Certificates and site keys for a federation (``fedseg certs``, ``fedseg site-key``).

Two separate trust mechanisms, as in Flower's deployment guide:

* **TLS**: a private CA signs the coordinator's server certificate. Sites get ``ca.pem``
  and refuse a SuperLink whose certificate that CA did not sign.
* **SuperNode authentication**: every site has an EC key pair (NIST P-384, OpenSSH
  format, which is what ``flower-supernode --auth-supernode-private-key`` reads). The
  coordinator registers the *public* key; a SuperNode whose key is not registered is
  refused. Private keys never leave the site.

Files are written with 0600 permissions for private keys, and never overwritten
silently.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import ConfigError, FederationError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
VALID_DAYS = 825  # the longest validity browsers and many TLS stacks still accept


@dataclass(frozen=True)
class Certificates:
    """Paths of a certificate folder made by :func:`make_certificates`."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / CA_CERT

    @property
    def server_cert(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.folder / SERVER_KEY

    def check(self) -> Certificates:
        for path in (self.ca, self.server_cert, self.server_key):
            if not path.is_file():
                raise ConfigError(f"{path}: missing; make the certificates with `fedseg certs {self.folder} --host NAME`")
        return self


def _write(path: Path, data: bytes, *, private: bool, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: already exists (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificates(folder: str | Path, hosts: Sequence[str], *, overwrite: bool = False) -> Certificates:
    """A CA and a server certificate valid for ``hosts`` (DNS names or IP addresses).

    The CA key stays in ``folder`` (keep it offline); sites need only ``ca.pem``.
    """
    if not hosts:
        raise ConfigError("certs: give at least one --host (the name or address sites use to reach the coordinator)")
    folder = Path(folder)
    # The coordinator reaches its own Control API over loopback.
    hosts = list(dict.fromkeys([*hosts, "localhost", "127.0.0.1"]))
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedSeg Studio federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(folder / CA_KEY, _pem_key(ca_key), private=True, overwrite=overwrite)
    _write(folder / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False, overwrite=overwrite)
    _write(folder / SERVER_KEY, _pem_key(server_key), private=True, overwrite=overwrite)
    _write(folder / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM), private=False, overwrite=overwrite)
    return Certificates(folder)


def make_site_key(path: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format: ``path`` (private) and ``path.pub``."""
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(private_path, private, private=True, overwrite=overwrite)
    _write(public_path, public + b"\n", private=False, overwrite=overwrite)
    return private_path, public_path


def read_public_key(path: str | Path) -> bytes:
    """A site's OpenSSH EC public key, checked; raises ConfigError with the file name."""
    path = Path(path)
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the site key ({exc.strerror})") from None
    try:
        key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path}: not an OpenSSH public key ({exc}); make one with `fedseg site-key`") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{path}: not an EC public key; make one with `fedseg site-key`")
    return data


def public_key_of(private_path: str | Path) -> Path:
    """The ``.pub`` beside a site's private key (it must exist: Flower needs both)."""
    public = Path(str(private_path) + ".pub")
    if not public.is_file():
        raise ConfigError(f"{public}: missing; the site key pair from `fedseg site-key` has both files")
    return public


def check_server_certificate(address: str, ca: str | Path, timeout_s: float = 5.0) -> bool:
    """Check, before a SuperNode starts, that the server at ``HOST:PORT`` presents a
    certificate signed by ``ca`` for that host name.

    Flower's SuperNode retries a failed TLS handshake for ever, so a site given the wrong
    CA file (or the wrong host) would wait silently. Returns False if the server cannot
    be reached now (the SuperNode will keep trying); raises FederationError if it can be
    reached and its certificate does not verify.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise FederationError(f"{ca}: not a readable PEM CA certificate ({exc})") from None
    context.set_alpn_protocols(["h2"])  # what gRPC speaks
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except ssl.SSLCertVerificationError as exc:
        raise FederationError(
            f"{address}: the server's certificate does not verify against {ca} ({exc.verify_message}); "
            "ask the coordinator for the CA certificate (ca.pem) of this federation, and use the host name its certificate was made for"
        ) from None
    except (ssl.SSLError, OSError):
        return False
