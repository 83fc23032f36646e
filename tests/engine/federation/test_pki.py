"""Certificates and site keys: a chain that verifies, names that match, keys Flower reads."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from engine.errors import ConfigError
from engine.federation.pki import make_certificates, make_site_key, read_public_key


def test_server_certificate_is_signed_by_the_ca_for_the_given_hosts(tmp_path):
    certs = make_certificates(tmp_path / "pki", ["fl.example.org", "10.1.2.3"])
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"fl.example.org", "localhost"}
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(certs.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600


def test_certificates_are_not_overwritten_silently(tmp_path):
    make_certificates(tmp_path, ["a"])
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        make_certificates(tmp_path, ["a"])
    assert (tmp_path / "ca.pem").read_bytes() == before
    make_certificates(tmp_path, ["a"], overwrite=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_site_key_pair_is_openssh_ec_p384(tmp_path):
    private, public = make_site_key(tmp_path / "site-a.key")
    key = load_ssh_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert read_public_key(public).startswith(b"ecdsa-sha2-nistp384 ")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_bad_public_key_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.pub"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match=r"x\.pub: not an OpenSSH public key"):
        read_public_key(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_public_key(tmp_path / "missing.pub")
