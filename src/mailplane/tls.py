"""TLS material and server contexts shared by the SMTP and IMAP listeners.

Production points MAILPLANE_TLS_CERT / MAILPLANE_TLS_KEY at a real pair (PEM). Embedded mode
generates a self-signed pair under DATA_DIR/tls/ on first start, once, under a file lock
so that several services starting together agree on one pair. Contexts refuse anything
below TLS 1.2 (RFC 8996 deprecates 1.0 and 1.1) and accept an SNI hook so that dedicated
tenant host names can get their own certificate later without touching the listeners.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Given a server name from the client's SNI, return the context to use (None: keep default).
SniHook = Callable[[str], ssl.SSLContext | None]


def tls_paths(*, data_dir: Path | None = None) -> tuple[Path, Path]:
    """(certificate, key) paths: configured ones, else the embedded pair (generated once)."""
    cert, key = os.environ.get("MAILPLANE_TLS_CERT"), os.environ.get("MAILPLANE_TLS_KEY")
    if cert and key:
        return Path(cert), Path(key)
    if data_dir is None:
        from django.conf import settings

        data_dir = Path(settings.DATA_DIR)
    return self_signed_ensure(directory=data_dir / "tls")


def self_signed_ensure(
    *, directory: Path, hostnames: tuple[str, ...] = ("localhost",)
) -> tuple[Path, Path]:
    """Create a self-signed pair in `directory` unless one is there; idempotent, race-free."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        names = _configured_hostnames(hostnames)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomic(key_path, key_pem, mode=0o600)
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cert_path, key_path


def _configured_hostnames(defaults: tuple[str, ...]) -> list[str]:
    names = list(defaults)
    for var in ("MAILPLANE_SMTP_HOST", "MAILPLANE_IMAP_HOST", "MAILPLANE_MX_HOST"):
        value = os.environ.get(var, "").strip().lower()
        if value and value not in names:
            names.insert(0, value)
    return names


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def server_context(
    *, cert: Path | None = None, key: Path | None = None, sni: SniHook | None = None
) -> ssl.SSLContext:
    """A server-side context: TLS 1.2+, no client certificates, optional SNI selection."""
    if cert is None or key is None:
        cert, key = tls_paths()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(str(cert), str(key))
    if sni is not None:

        def _select(obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
            chosen = sni(name.lower()) if name else None
            if chosen is not None:
                obj.context = chosen

        context.sni_callback = _select
    return context


def client_context_insecure() -> ssl.SSLContext:
    """For tests and benchmarks against our own self-signed certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA store: nothing is verified
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
