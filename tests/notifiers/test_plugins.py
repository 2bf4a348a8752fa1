"""Third-party notifiers: the test plugin in tests/plugins/ is pip-installed (into a target directory,
never into the shared venv) and must load from the `monitor.notifiers` entry point group, validate
with its own model, and pass the contract every built-in type passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alerts.notifiers import notifier_config_models, notifier_types
from alerts.notifiers.base import Notifier, NotifierConfig, Sent, deliver
from tests.notifiers.samples import notification

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SRC = ROOT / "tests" / "plugins" / "monitor_echo_plugin"

# The smallest valid table of each built-in type.
BUILTIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "pagerduty": {"routing_key": "k"},
    "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/X"},
    "email": {"host": "smtp.example.com", "from": "monitor@example.com", "to": ["ops@example.com"]},
    "webhook": {"url": "https://hooks.example.com/monitor"},
    "alertmanager": {"url": "http://alertmanager:9093"},
}


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --target`: a real install of the plugin distribution, metadata and entry
    points included, in a directory of its own. Built from a copy, so that no build files land in
    the work tree; no index and no build isolation, so it works offline."""
    work = tmp_path_factory.mktemp("echo-plugin")
    src = work / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Needs setuptools >= 70.1 in the venv (it builds wheels without the `wheel` package).
    assert result.returncode == 0, f"pip could not install the test plugin:\n{result.stderr}"
    assert list(site.glob("monitor_echo_plugin-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def with_plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin importable in this process; the registry's cache cleared before and after."""
    monkeypatch.syspath_prepend(str(plugin_site))
    notifier_types.cache_clear()
    try:
        yield plugin_site
    finally:
        notifier_types.cache_clear()


def test_registry_finds_the_plugin(with_plugin: Path) -> None:
    types = notifier_types()
    assert types["echo"].__module__ == "monitor_echo_plugin"
    assert types["echo"].__name__ == "EchoNotifier"
    assert notifier_config_models()["echo"].__name__ == "EchoConfig"
    assert set(BUILTIN_EXAMPLES) <= set(types)


def test_without_the_plugin_there_is_no_echo() -> None:
    notifier_types.cache_clear()
    assert "echo" not in notifier_types()


def _monitor(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("MONITOR_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_validate_accepts_the_plugin_type(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(
        '[notifiers.x]\ntype = "echo"\npath = "/tmp/echo.jsonl"\n\n'
        '[[routes]]\nmatch = { severity = "critical" }\nnotify = ["x"]\n'
    )
    result = _monitor("validate", "-c", str(config), site=plugin_site, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 notifiers" in result.stdout


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ('outcome = "maybe"', "notifiers.x.outcome"),
        ('colour = "blue"', "notifiers.x.colour"),
        ('path = ""', "notifiers.x.path"),
    ],
    ids=["bad-value", "unknown-key", "empty-path"],
)
def test_validate_reports_plugin_errors_at_their_path(
    table: str, path: str, plugin_site: Path, tmp_path: Path
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f'[notifiers.x]\ntype = "echo"\n{table}\n')
    result = _monitor("validate", "-c", str(config), site=plugin_site, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert any(line.startswith(f"{path}: ") for line in result.stdout.splitlines()), result.stdout


def test_validate_without_the_plugin_names_the_known_types(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text('[notifiers.x]\ntype = "echo"\n')
    result = _monitor("validate", "-c", str(config), site=tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert "notifiers.x.type: unknown notifier type 'echo'" in result.stdout
    assert "pagerduty" in result.stdout


async def test_plugin_delivers(
    with_plugin: Path, tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    cls = notifier_types()["echo"]
    out = tmp_path / "echo.jsonl"
    config = cls.config_model.model_validate({"type": "echo", "path": str(out)})
    notifier = cls("x", config, http_session)
    assert await deliver(notifier, notification()) == Sent()
    assert '"check": "backend-api"' in out.read_text()


# ---------------------------------------------------------------- the contract, for every type


def _examples() -> dict[str, dict[str, Any]]:
    return {**BUILTIN_EXAMPLES, "echo": {}}


@pytest.mark.parametrize("type_name", [*BUILTIN_EXAMPLES, "echo"])
def test_every_type_honours_the_contract(type_name: str, with_plugin: Path) -> None:
    cls = notifier_types()[type_name]
    assert issubclass(cls, Notifier)
    assert cls.type == type_name
    model = cls.config_model
    assert issubclass(model, NotifierConfig)
    config = model.model_validate({"type": type_name, **_examples()[type_name]})
    assert config.timeout == 10.0  # the shared key and its default
    with pytest.raises(ValueError, match="type"):
        model.model_validate({**_examples()[type_name], "type": "something-else"})
    with pytest.raises(ValueError, match="Extra inputs"):
        model.model_validate({"type": type_name, **_examples()[type_name], "no_such_key": 1})
    with pytest.raises(ValueError, match="frozen"):
        config.timeout = 1.0  # type: ignore[misc]
    assert "send" not in getattr(cls, "__abstractmethods__", frozenset())
