"""The `https` kind's certificates: a local CA made at bench start, and an ECDSA P-256 server
certificate it issues for the target's name."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

# A name, not an address, so that every run resolves it (a health check's URL names a host).
# `localhost` is in every /etc/hosts; `*.localhost` is not resolved by every system's resolver.
HOSTNAME = "localhost"


@dataclass(frozen=True, slots=True)
class Certificates:
    ca_file: Path  # the CA, PEM: what the daemon, blackbox_exporter and the floor trust
    cert_file: Path  # the server certificate chain, PEM (nginx)
    key_file: Path  # its private key, PEM (nginx)


def make_certificates(workdir: Path) -> Certificates:
    import trustme

    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)  # P-256, as most public sites' ECDSA certificates
    server = ca.issue_cert(HOSTNAME)
    certs = Certificates(workdir / "bench-ca.pem", workdir / "server.pem", workdir / "server.key")
    ca.cert_pem.write_to_path(str(certs.ca_file))
    server.private_key_pem.write_to_path(str(certs.key_file))
    with certs.cert_file.open("wb") as out:
        for pem in server.cert_chain_pems:
            out.write(pem.bytes())
    return certs


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A verifying client context (hostname and chain) that trusts the bench CA only."""
    return ssl.create_default_context(cafile=str(ca_file))
