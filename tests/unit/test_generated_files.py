"""The files generated from the protos are what their scripts give now: nobody edited them by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


# gen_errors: the client's reason classes and the README's table of reasons, from ErrorReason;
# gen_service_config: the published service config, from the services and the client's retry policy;
# gen_openapi: the OpenAPI document of the HTTP/JSON API, from the google.api.http annotations.
@pytest.mark.parametrize("script", ["gen_errors.py", "gen_service_config.py", "gen_openapi.py"])
def test_the_generated_file_is_current(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
