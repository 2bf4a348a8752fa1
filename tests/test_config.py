"""Config: SPEC examples validate; invalid configs are rejected naming the key; secrets stay masked."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from checks import CheckConfig
from checks.http import HttpCheckConfig
from checks.postgres import PostgresCheckConfig
from monitor.cli import main
from monitor.config import ConfigError, config_schema, parse_config
from monitor.interpolation import interpolate
from monitor.models import Frozen, freeze, frozen_type, mask_url, thaw

DATA = Path(__file__).parent / "data"
SPEC_ENV = {
    "HEALTH_TOKEN": "health-token-value",
    "DATABASE_URL": "postgresql://app:db-password@db.example.com:5432/app",
    "PAGERDUTY_ROUTING_KEY": "pd-routing-key-value",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/slack-secret",
    "SMTP_PASSWORD": "smtp-password-value",
}
SECRETS = [v for k, v in SPEC_ENV.items()] + ["db-password", "slack-secret"]

BASE = """
[[checks]]
name = "web"
type = "http"
url = "http://127.0.0.1:8080/health"
"""


def spec_example() -> str:
    return (DATA / "spec_example.toml").read_text()


def test_spec_example_validates() -> None:
    config = parse_config(spec_example(), SPEC_ENV)
    assert [c.name for c in config.checks] == ["backend-api", "collab-tcp", "collab-ws", "database"]
    assert set(config.notifiers) == {"oncall", "team-chat", "ops-mail", "hook", "am"}
    assert config.monitor.default_interval == 30.0
    assert config.checks[0].max_body == 1_000_000  # "1MB"
    assert config.checks[3].long_query_after == 300.0  # "5m"
    assert config.maintenance[0].duration == 7200.0
    assert config.routes[0].escalate[0].after == 900.0


def test_spec_other_sections_validate() -> None:
    text = BASE + textwrap.dedent(
        """
        [monitor]
        state = "postgresql://monitor@db.example.com/monitor"
        [alerts]
        flapping = { changes = 6, window = "30m" }
        [cluster]
        mode = "ha"
        failover = "15s"
        shards = 2
        shard = 1
        [[maintenance]]
        name = "one-off"
        checks = ["web*"]
        start = "2026-12-01T02:00:00Z"
        end = "2026-12-01T04:00:00Z"
        [[routes]]
        match = { severity = "critical", check = "web*", labels = { team = "backend" } }
        notify = ["hook"]
        continue = true
        send_resolved = false
        [notifiers.hook]
        type = "webhook"
        url = "https://hooks.example.com/monitor"
        """
    )
    config = parse_config(text, {})
    assert config.cluster.shards == 2
    assert config.routes[0].continue_ is True
    assert config.alerts.flapping.window == 1800.0


def test_default_monitor_toml_validates() -> None:
    config = parse_config((Path(__file__).parent.parent / "monitor.toml").read_text(), {})
    assert {c.type for c in config.checks} == {"http", "tcp"}


def test_interpolation_with_default_and_from_env() -> None:
    text = BASE.replace("8080", "${PORT:-9999}") + 'labels = { team = "${TEAM}" }\n'
    config = parse_config(text, {"TEAM": "backend"})
    assert config.checks[0].url == "http://127.0.0.1:9999/health"
    assert config.checks[0].labels == {"team": "backend"}


def test_threshold_merging_builtin_global_and_per_check() -> None:
    text = textwrap.dedent(
        """
        [thresholds.latency_p95_ms]
        warning = 500
        critical = 1000
        window = "5m"
        [thresholds.up]
        trigger_after = 3
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1/"
        thresholds = { latency_p95_ms = { warning = 300, critical = 800 }, tls_days_left = false }
        [[checks]]
        name = "other"
        type = "tcp"
        host = "127.0.0.1"
        port = 1
        thresholds = { only_here = { critical = 5 } }
        """
    )
    config = parse_config(text, {})
    api = config.rows_for("api")
    assert (api["latency_p95_ms"].warning, api["latency_p95_ms"].critical) == (300, 800)
    assert api["latency_p95_ms"].window_s == 300  # kept from the global row
    assert api["up"].trigger_after == 3 and api["up"].direction == "below"  # merged over built-in
    assert "tls_days_left" not in api
    other = config.rows_for("other")
    assert other["only_here"].critical == 5
    assert other["tls_days_left"].warning == 14
    assert "only_here" not in api


# Each invalid config and the key its error must name.
INVALID = [
    ("unknown-top-key", BASE + "[monitr]\nlisten = '1:1'\n", "monitr: unknown key"),
    ("unknown-check-key", BASE + 'intervall = "30s"\n', "checks[0].intervall: unknown key"),
    ("bad-url", BASE.replace("http://127.0.0.1:8080/health", "not a url"), "checks[0].url"),
    ("bad-duration", BASE + 'interval = "30 parsecs"\n', "checks[0].interval"),
    ("bad-size", BASE + 'max_body = "lots"\n', "checks[0].max_body"),
    ("unknown-type", BASE.replace('"http"', '"gopher"'), "checks[0].type: unknown check type"),
    ("missing-type", BASE.replace('type = "http"\n', ""), "checks[0].type: required key missing"),
    ("bad-name", BASE.replace('"web"', '"Web Server"'), "checks[0].name"),
    ("duplicate-name", BASE + BASE, 'checks[1].name: duplicate name "web"'),
    (
        "missing-env",
        BASE + 'headers = { Authorization = "Bearer ${NOPE_TOKEN}" }\n',
        "checks[0].headers.Authorization: environment variable NOPE_TOKEN is not set",
    ),
    (
        "unknown-dependency",
        BASE + 'depends_on = ["database"]\n',
        'checks[0].depends_on[0]: unknown check "database"',
    ),
    (
        "route-unknown-notifier",
        BASE + '[[routes]]\nnotify = ["pager"]\n',
        'routes[0].notify[0]: unknown notifier "pager"',
    ),
    (
        "threshold-order-above",
        BASE + "[thresholds.latency_p95_ms]\nwarning = 1000\ncritical = 500\n",
        "thresholds.latency_p95_ms: with direction above",
    ),
    (
        "threshold-order-below",
        BASE + "[thresholds.tls_days_left]\nwarning = 2\n",
        "thresholds.tls_days_left: with direction below",
    ),
    (
        "threshold-no-levels",
        BASE + '[thresholds.error_rate_pct]\nwindow = "5m"\n',
        "thresholds.error_rate_pct: a threshold row needs",
    ),
    (
        "opt-out-unknown-row",
        BASE + "thresholds = { latncy_p95_ms = false }\n",
        "checks[0].thresholds.latncy_p95_ms: no threshold row",
    ),
    (
        "per-check-order",
        BASE + "thresholds = { connections_pct = { warning = 99 } }\n",
        "checks[0].thresholds.connections_pct",
    ),
    (
        "bad-timezone",
        "[monitor]\ntimezone = 'Mars/Olympus'\n" + BASE,
        "monitor.timezone: unknown time zone",
    ),
    ("bad-state", "[monitor]\nstate = 'redis://x'\n" + BASE, "monitor.state"),
    (
        "bad-cron",
        BASE + '[[maintenance]]\nname = "m"\ncron = "61 * * * *"\nduration = "1h"\n',
        "maintenance[0].cron",
    ),
    (
        "bad-notifier-field",
        BASE + '[notifiers.mail]\ntype = "email"\nhost = "smtp"\nfrom = "m@x"\nto = []\n',
        "notifiers.mail.to",
    ),
    (
        "missing-secret",
        BASE + '[notifiers.pd]\ntype = "pagerduty"\n',
        "notifiers.pd.routing_key: required key missing",
    ),
    (
        "bad-security",
        BASE + '[notifiers.mail]\ntype = "email"\nhost = "h"\nfrom = "a@b"\nto = ["c@d"]\nsecurity = "ssl"\n',
        "notifiers.mail.security",
    ),
    (
        "dependency-cycle",
        BASE
        + 'depends_on = ["db"]\n'
        + '[[checks]]\nname = "db"\ntype = "tcp"\nhost = "h"\nport = 5432\ndepends_on = ["web"]\n',
        "depends_on: dependency cycle",
    ),
    (
        "bad-port",
        BASE.replace(
            'type = "http"\nurl = "http://127.0.0.1:8080/health"',
            'type = "tcp"\nhost = "h"\nport = 70000',
        ),
        "checks[0].port",
    ),
    ("bad-regex", BASE + 'expect_body = "(unclosed"\n', "checks[0].expect_body"),
    (
        "bad-trigger-after",
        BASE + "[thresholds.up]\ntrigger_after = 0\n",
        "thresholds.up.trigger_after",
    ),
    (
        "business-hours-empty",
        BASE + '[business_hours]\nstart = "09:00"\nend = "09:00"\n',
        "business_hours: start and end must differ",
    ),
    (
        "business-hours-trailing-newline",
        BASE + '[business_hours]\nstart = "09:00\\n"\n',
        "business_hours.start: invalid time",
    ),
    ("toml-syntax", BASE + "this is not toml\n", "TOML syntax"),
    # A zero interval ran the check once and never again; a zero timeout failed every run.
    ("interval-zero", BASE + 'interval = "0s"\n', "checks[0].interval: must be greater than 0"),
    ("interval-zero-number", BASE + "interval = 0\n", "checks[0].interval: must be greater than 0"),
    ("timeout-zero", BASE + 'timeout = "0ms"\n', "checks[0].timeout: must be greater than 0"),
    # A run never overlaps the next: a longer timeout skips every other run while the target hangs.
    (
        "timeout-over-interval",
        BASE + BASE.replace('"web"', '"api"') + 'interval = "10s"\ntimeout = "30s"\n',
        "checks[1].timeout: 30s is longer than the interval 10s",
    ),
    (
        "timeout-from-default-over-interval",
        '[monitor]\ndefault_timeout = "10s"\n' + BASE + 'interval = "5s"\n',
        "checks[0].timeout: 10s (monitor.default_timeout) is longer than the interval 5s",
    ),
    (
        "timeout-over-interval-from-default",
        '[monitor]\ndefault_interval = "10s"\n' + BASE + 'timeout = "30s"\n',
        "checks[0].timeout: 30s is longer than the interval 10s (monitor.default_interval)",
    ),
    (
        "default-timeout-over-default-interval",
        '[monitor]\ndefault_interval = "10s"\ndefault_timeout = "30s"\n' + BASE,
        "monitor.default_timeout: 30s is longer than monitor.default_interval (10s)",
    ),
    (
        "default-timeout-over-builtin-default-interval",
        '[monitor]\ndefault_timeout = "45s"\n' + BASE,
        "monitor.default_timeout: 45s is longer than monitor.default_interval (30s)",
    ),
    # The error shows the name itself, not a "{name!r}" placeholder.
    (
        "bad-metric-name",
        BASE + 'metrics = { "pool-size" = "database.pool" }\n',
        "checks[0].metrics: invalid metric name 'pool-size': use letters, digits and _",
    ),
    (
        "builtin-metric-name",
        BASE + 'metrics = { status_code = "code" }\n',
        "checks[0].metrics: metric name 'status_code' is taken by a built-in sample",
    ),
    (
        "empty-metric-path-part",
        BASE + 'metrics = { pool = "database..pool" }\n',
        "checks[0].metrics: metric 'pool': empty path part in 'database..pool'",
    ),
    # Each time is read on its own (an offset, or monitor.timezone), then the two are compared:
    # 05:00 in Paris is 04:00Z, before the start although its wall clock reads later.
    (
        "maintenance-end-before-start-mixed-offsets",
        '[monitor]\ntimezone = "Europe/Paris"\n'
        + BASE
        + '[[maintenance]]\nname = "m"\nstart = "2026-12-01T04:30:00Z"\nend = "2026-12-01T05:00:00"\n',
        "maintenance[0].end: 2026-12-01T05:00:00+01:00 is not after start 2026-12-01T05:30:00+01:00",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_config_rejected_naming_the_key(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    assert main(["validate", "-c", str(path)]) == 2
    out = capsys.readouterr().out
    assert expected in out, out


def test_validate_rejects_a_zero_interval_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(http_check("a") + http_check("b", 'interval = "0s"\n'))
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert "checks[1].interval: must be greater than 0" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[monitor]\ndefault_timeout = "10s"\n' + BASE + 'interval = "5s"\n',
            ["checks[0].timeout: 10s (monitor.default_timeout) is longer than the interval 5s"],
        ),
        # An invalid default is reported once, at its own key, not again at every check using it.
        (
            '[monitor]\ndefault_interval = "0s"\n' + BASE + 'timeout = "40s"\n',
            ["monitor.default_interval: must be greater than 0"],
        ),
        (
            "[monitor]\ndefault_timeout = 0\n" + BASE + 'interval = "5s"\n',
            ["monitor.default_timeout: must be greater than 0"],
        ),
    ],
    ids=["default-timeout-named", "zero-default-interval-once", "zero-default-timeout-once"],
)
def test_interval_timeout_errors_are_exactly(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert info.value.errors == expected


def test_timeout_nobody_wrote_follows_a_short_interval() -> None:
    """Only the built-in 10 s adapts; a timeout written anywhere is checked (see INVALID)."""
    config = parse_config(
        http_check("fast", 'interval = "200ms"\n')
        + http_check("equal", 'interval = "5s"\ntimeout = "5s"\n')
        + http_check("slow", 'interval = "1m"\n'),
        {},
    )
    fast, equal, slow = config.checks
    assert (fast.interval, fast.timeout) == (0.2, 0.2)
    assert (equal.interval, equal.timeout) == (5.0, 5.0)
    assert (slow.interval, slow.timeout) == (60.0, 10.0)
    short_default = parse_config('[monitor]\ndefault_interval = "2s"\n' + http_check("a"), {})
    assert (short_default.checks[0].interval, short_default.checks[0].timeout) == (2.0, 2.0)


def test_business_hours_start_after_end_is_a_night_shift(tmp_path: Path) -> None:
    """22:00-06:00 is a night shift (each listed day's night), no longer an error."""
    path = tmp_path / "monitor.toml"
    path.write_text(BASE + '[business_hours]\ndays = ["mon", "fri"]\nstart = "22:00"\nend = "06:00"\n')
    assert main(["validate", "-c", str(path)]) == 0


def test_every_error_is_reported_at_once() -> None:
    text = BASE + 'intervall = "1s"\n[[routes]]\nnotify = ["nobody"]\n[monitor]\ntimezone = "Nowhere/City"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    joined = "\n".join(info.value.errors)
    assert "checks[0].intervall: unknown key" in joined
    assert "monitor.timezone" in joined


def test_secrets_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config(spec_example(), SPEC_ENV)
    dumped = json.dumps(config.model_dump(mode="json", by_alias=True)) + repr(config) + str(config)
    for secret in SECRETS:
        assert secret not in dumped
    assert "***" in dumped
    # An invalid value of a secret key is not echoed in the error either.
    bad = BASE + '[notifiers.pd]\ntype = "pagerduty"\nrouting_key = 12345678\n'
    path = tmp_path / "m.toml"
    path.write_text(bad)
    assert main(["validate", "-c", str(path)]) == 2
    assert "12345678" not in capsys.readouterr().out


def test_url_userinfo_and_query_masked() -> None:
    text = BASE.replace(
        "http://127.0.0.1:8080/health", "http://user:pw-secret@127.0.0.1:8080/health?token=q-secret"
    )
    dumped = json.dumps(parse_config(text, {}).model_dump(mode="json"))
    assert "pw-secret" not in dumped and "q-secret" not in dumped
    assert "127.0.0.1:8080/health" in dumped


def test_schema_lists_every_check_and_notifier_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == config_schema()
    check_refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["checks"]["items"]["oneOf"]}
    assert check_refs == {
        "HttpCheckConfig",
        "TcpCheckConfig",
        "WebSocketCheckConfig",
        "PostgresCheckConfig",
        "PrometheusCheckConfig",
        "HeartbeatCheckConfig",
    }
    notifier_refs = schema["properties"]["notifiers"]["additionalProperties"]["oneOf"]
    assert len(notifier_refs) == 5
    assert schema["$defs"]["HttpCheckConfig"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///monitor-state.db", "sqlite:///monitor-state.db"),
        ("postgresql://monitor:pw@db:5432/state", "postgresql://***@db:5432/state"),
        ("https://h.example.com/x?key=v", "https://h.example.com/x?***"),
        ("http://127.0.0.1:9100/healthz", "http://127.0.0.1:9100/healthz"),
    ],
    ids=["sqlite", "userinfo", "query", "plain"],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_repr_never_shows_url_credentials() -> None:
    text = '[monitor]\nstate = "postgresql://u:state-secret@h/db"\n' + BASE.replace(
        "http://127.0.0.1:8080/health", "http://u:pw-secret@127.0.0.1:8080/health?token=q-secret"
    )
    shown = repr(parse_config(text, {}))
    for secret in ("state-secret", "pw-secret", "q-secret"):
        assert secret not in shown


# ---------------------------------------------------------------- memory: shared values, no copies


def http_check(name: str, extra: str = "") -> str:
    return (
        f'[[checks]]\nname = "{name}"\ntype = "http"\nurl = "http://127.0.0.1:8080/health"\n'
        f'expect_status = [200]\nexpect_json = {{ status = "ok" }}\n{extra}'
    )


def test_equal_plain_values_of_checks_are_one_object() -> None:
    config = parse_config(http_check("a") + http_check("b", 'interval = "30s"\n'), {})
    a, b = config.checks
    for key in ("type", "url", "interval", "expect_status", "expect_json", "labels", "depends_on"):
        assert getattr(a, key) is getattr(b, key), key
    assert a.expect_status == [200] and a.expect_json == {"status": "ok"} and a.labels == {}
    assert a.name != b.name


def test_sharing_keeps_types_and_order_apart() -> None:
    values = ["1", "1.0", "true", "-0.0", "0.0", '"1"', "[1]", "{ b = 1, c = 2 }", "{ c = 2, b = 1 }"]
    text = "".join(
        http_check(f"c{i}", f"expect_json = {{ v = {v} }}\n").replace('expect_json = { status = "ok" }\n', "")
        for i, v in enumerate(values)
    )
    config = parse_config(text, {})
    got = [c.expect_json["v"] for c in config.checks]  # type: ignore[attr-defined]
    assert [type(v) for v in got] == [int, float, bool, float, float, str, list, dict, dict]
    assert str(got[3]) == "-0.0" and str(got[4]) == "0.0"
    assert list(got[7]) == ["b", "c"] and list(got[8]) == ["c", "b"]
    assert len({id(c.expect_json) for c in config.checks}) == len(values)  # type: ignore[attr-defined]


def test_secret_values_are_never_shared() -> None:
    text = (
        http_check("a", 'headers = { Authorization = "secret-a" }\n')
        + http_check("b", 'headers = { Authorization = "secret-b" }\n')
        + http_check("c", 'headers = { Authorization = "secret-a" }\n')
    )
    a, b, c = parse_config(text, {}).checks
    secrets = [x.headers["Authorization"].get_secret_value() for x in (a, b, c)]  # type: ignore[attr-defined]
    assert secrets == ["secret-a", "secret-b", "secret-a"]
    assert a.headers != b.headers and a.headers == c.headers  # type: ignore[attr-defined]


def test_values_are_not_shared_across_parses() -> None:
    first = parse_config(http_check("a"), {})
    second = parse_config(http_check("a"), {})
    assert first.checks[0].expect_status is not second.checks[0].expect_status  # type: ignore[attr-defined]


def test_interpolation_in_nested_tables_and_arrays() -> None:
    extra = 'labels = { team = "${TEAM}" }\nmetrics = { depth = "a.${KEY:-b}.c" }\n'
    text = http_check("a", extra).replace('{ status = "ok" }', '{ deep = { list = ["${V}", 2, "x"] } }')
    config = parse_config(text, {"TEAM": "core", "V": "ok"})
    check = config.checks[0]
    assert check.expect_json == {"deep": {"list": ["ok", 2, "x"]}}  # type: ignore[attr-defined]
    assert check.labels == {"team": "core"}
    assert check.metrics == {"depth": "a.b.c"}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        parse_config(text, {"TEAM": "core"})
    assert info.value.errors == ["checks[0].expect_json.deep.list[0]: environment variable V is not set"]


def test_interpolate_copies_only_what_changes() -> None:
    raw = {"a": {"b": ["x", "${V}", {"c": "${W:-w}"}]}, "same": {"d": ["y", 1]}, "n": 3}
    before = copy.deepcopy(raw)
    errors: dict[str, str] = {}
    out = interpolate(raw, {"V": "v"}, (), errors)
    assert out == {"a": {"b": ["x", "v", {"c": "w"}]}, "same": {"d": ["y", 1]}, "n": 3}
    assert raw == before and errors == {}
    assert out is not raw and out["same"] is raw["same"] and out["a"]["b"][0] is raw["a"]["b"][0]
    assert interpolate(raw["same"], {}, (), errors) is raw["same"]


def test_monitor_defaults_fill_checks_without_their_own() -> None:
    text = (
        '[monitor]\ndefault_interval = "45s"\ndefault_timeout = "3s"\n'
        + http_check("a")
        + http_check("b", 'interval = "5s"\ntimeout = 2\n')
    )
    a, b = parse_config(text, {}).checks
    assert (a.interval, a.timeout) == (45.0, 3.0)
    assert (b.interval, b.timeout) == (5.0, 2.0)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    return []


def test_loaded_checks_keep_no_string_of_the_toml_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the check models keep is copied out of the parsed TOML, so the whole tree is freed
    at once after loading (at 20,000 checks, the difference is 18 MB of resident memory)."""
    tree_strings: list[str] = []  # kept alive here, so that their ids stay theirs
    real_loads = tomllib.loads

    def loads(text: str) -> Any:
        tree = real_loads(text)
        tree_strings.extend(strings(tree))
        return tree

    monkeypatch.setattr(tomllib, "loads", loads)
    config = parse_config(
        textwrap.dedent(
            """
            [[checks]]
            name = "backend-api"
            type = "http"
            url = "http://127.0.0.1:8080/health"
            expect_json = { status = "ok" }
            labels = { team = "payments" }

            [[checks]]
            name = "collab-tcp"
            type = "tcp"
            host = "collab.internal"
            port = 1234
            depends_on = ["backend-api"]
            """
        ),
        {},
    )

    tree_ids = {id(s) for s in tree_strings}
    kept = [
        s
        for check in config.checks
        for f in dataclasses.fields(check)
        for s in strings(getattr(check, f.name))
    ]
    assert "collab.internal" in kept and "payments" in kept and "backend-api" in kept
    assert all(len(s) < 2 or id(s) not in tree_ids for s in kept)  # 0-1 char strings are singletons


# ---------------------------------------------------------------- run-time check configs


def _instances(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_a_check_config_is_a_frozen_slotted_copy_and_the_model_is_let_go() -> None:
    before = _instances(HttpCheckConfig)
    config = parse_config(http_check("a", 'headers = { Authorization = "Bearer t0ken-value" }\n'), {})
    (check,) = config.checks
    assert isinstance(check, Frozen) and dataclasses.is_dataclass(check) and not isinstance(check, BaseModel)
    assert type(check) is frozen_type(HttpCheckConfig) and type(check).__name__ == "HttpCheckConfig"
    assert not hasattr(check, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.url = "http://elsewhere/"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(check)] == list(HttpCheckConfig.model_fields)
    assert check.headers["Authorization"].get_secret_value() == "Bearer t0ken-value"  # type: ignore[attr-defined]
    assert "t0ken-value" not in repr(check)
    assert _instances(HttpCheckConfig) == before  # no validated model is kept


def test_equal_configs_compare_equal_for_a_reload() -> None:
    text = http_check("a", 'labels = { team = "core" }\n')
    first, second = parse_config(text, {}).checks[0], parse_config(text, {}).checks[0]
    assert first == second and first is not second
    changed = parse_config(text.replace('"core"', '"edge"'), {}).checks[0]
    assert changed != first


def test_nested_models_are_copied_too() -> None:
    table = {
        "name": "db",
        "type": "postgres",
        "dsn": "postgresql://u:pw@h/db",
        "queries": [{"metric": "m", "sql": "select 1"}],
    }
    frozen = freeze(PostgresCheckConfig.model_validate(table))
    (query,) = frozen.queries  # type: ignore[attr-defined]
    assert isinstance(query, Frozen) and (query.metric, query.sql) == ("m", "select 1")
    assert freeze(frozen) is frozen
    assert thaw(frozen) == PostgresCheckConfig.model_validate(table)


def test_a_plugin_model_gets_its_copy_with_its_properties() -> None:
    class GaugeConfig(CheckConfig):
        type: Literal["gauge"]
        low: float = 0.0
        high: float = 1.0

        @property
        def span(self) -> float:
            return self.high - self.low

    frozen = freeze(GaugeConfig.model_validate({"name": "g", "type": "gauge", "high": 5}))
    assert (frozen.name, frozen.high, frozen.span) == ("g", 5.0, 5.0)  # type: ignore[attr-defined]


def test_a_dump_shows_each_check_as_its_model_would() -> None:
    text = http_check("a", 'headers = { Authorization = "hdr-secret" }\n').replace(
        "http://127.0.0.1", "http://u:pw-secret@127.0.0.1"
    )
    (dumped,) = parse_config(text, {}).model_dump(mode="json")["checks"]
    assert dumped["headers"] == {"Authorization": "***"}
    assert dumped["url"] == "http://***@127.0.0.1:8080/health"
    assert dumped["expect_json"] == {"status": "ok"} and dumped["type"] == "http"


def test_models_keep_their_own_given_keys() -> None:
    a = HttpCheckConfig.model_validate({"name": "a", "type": "http", "url": "http://h/"})
    b = HttpCheckConfig.model_validate({"name": "b", "type": "http", "url": "http://h/"})
    assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__
    assert a.__pydantic_fields_set__ is not b.__pydantic_fields_set__


# ---------------------------------------------------------------- storms (SPEC section 12)


def test_storm_guard_default_table_and_off() -> None:
    default = parse_config(BASE, {}).alerts.storm
    assert default is not None and (default.checks, default.window) == (10, 60.0)
    assert parse_config("[alerts]\nstorm = false\n" + BASE, {}).alerts.storm is None
    table = parse_config('[alerts]\nstorm = { checks = 50, window = "5m" }\n' + BASE, {}).alerts.storm
    assert table is not None and (table.checks, table.window) == (50, 300.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[monitor]\nuplink = ["web", "gateway"]\n' + BASE, 'monitor.uplink[1]: unknown check "gateway"'),
        ("[alerts]\nstorm = { checks = 0 }\n" + BASE, "alerts.storm.checks"),
        ("[alerts]\nstorm = { check = 5 }\n" + BASE, "alerts.storm.check: unknown key"),
        ('[alerts]\nstorm = { window = "soon" }\n' + BASE, "alerts.storm.window"),
        ('[alerts]\nstorm = "off"\n' + BASE, "alerts.storm"),
    ],
    ids=[
        "uplink-unknown-check",
        "storm-checks-zero",
        "storm-unknown-key",
        "storm-bad-window",
        "storm-not-a-table",
    ],
)
def test_storm_and_uplink_errors_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert expected in str(info.value)


def test_uplink_names_checks() -> None:
    config = parse_config('[monitor]\nuplink = ["web"]\n' + BASE, {})
    assert config.monitor.uplink == ["web"]


def test_proxy_none_is_spelled_in_toml_and_goes_direct() -> None:
    """TOML has no null: `proxy = "none"` takes a notifier (default "env") off the proxy."""
    config = parse_config(
        BASE.replace(
            'url = "http://127.0.0.1:8080/health"', 'url = "http://127.0.0.1:8080/health"\nproxy = "none"'
        )
        + '[notifiers.hook]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\nproxy = "none"\n'
        + '[notifiers.other]\ntype = "webhook"\nurl = "https://hooks.example.com/y"\n'
    )
    assert config.notifiers["hook"].proxy is None
    assert config.notifiers["other"].proxy == "env"
    assert config.checks[0].proxy is None
    with pytest.raises(ConfigError) as raised:
        parse_config(
            BASE + '[notifiers.hook]\ntype = "webhook"\nurl = "https://h.example/x"\nproxy = "nope"\n'
        )
    assert "notifiers.hook.proxy" in str(raised.value.errors)
