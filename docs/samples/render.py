"""Render the README's sample notifications with the real notifiers' body builders.

    .venv/bin/python docs/samples/render.py            # writes the files next to this script
    .venv/bin/python docs/samples/render.py --png      # also email-critical.png (needs chromium)

The sample is the SPEC's example outage: backend-api answering 503, so `up 0 < 1`, critical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from anywhere without installing

from alerts.notifiers.base import Notification  # noqa: E402
from alerts.notifiers.email import EmailConfig, build_message, html_body, text_body  # noqa: E402
from alerts.notifiers.slack import build_message as slack_message  # noqa: E402

STARTED = 1_795_000_000.0  # 2026-11-18T11:06:40Z

SAMPLE = Notification(
    event="firing",
    alert_id="3f2a9c1e7b5d4e60",
    check="backend-api",
    check_type="http",
    target="backend.example.com",
    metric="up",
    severity="critical",
    value=0.0,
    threshold=1.0,
    direction="below",
    started_at=STARTED,
    created_at=STARTED + 60,
    reason="status 503",
    labels={"team": "backend", "component": "api"},
    runbook="https://wiki.example.com/runbook#issue-1-backend-api-not-responding",
)

EMAIL = EmailConfig.model_validate(
    {
        "type": "email",
        "host": "smtp.example.com",
        "from": "monitor@example.com",
        "to": ["ops@example.com"],
    }
)


def render(out: Path) -> list[Path]:
    message = build_message(SAMPLE, EMAIL)
    headers = "".join(
        f"{k}: {v}\n" for k, v in message.items() if k.lower() not in ("content-type", "mime-version")
    )
    files = {
        out / "slack-critical.json": json.dumps(slack_message(SAMPLE), indent=2, ensure_ascii=False) + "\n",
        out / "email-critical.txt": headers + "\n" + text_body(SAMPLE),
        out / "email-critical.html": html_body(SAMPLE),
    }
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=720,560",
                f"--screenshot={png}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", action="store_true", help="also screenshot the HTML email with chromium")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for path in render(args.out):
        print(path)
    if args.png:
        png = args.out / "email-critical.png"
        screenshot(args.out / "email-critical.html", png)
        print(png)


if __name__ == "__main__":
    main()
