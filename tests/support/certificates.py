"""Self-signed certificates for TLS tests, made with the openssl tool."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_self_signed(cert: Path, key: Path, *, common_name: str, subject_alt_name: str) -> None:
    """A one-day P-256 certificate that is its own CA; `subject_alt_name` as openssl writes it (`DNS:x`)."""
    made = subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ),
            *("-days", "1", "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={subject_alt_name}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
