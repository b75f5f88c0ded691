"""Config of change windows and freezes (issue 24): every error at once, with its field, the numbers and the fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rotator.config import from_mapping, window_span
from rotator.windows import WindowConfig, longest_gap
from tests.test_config import base, errors, policy

BERLIN = {"cron": "0 9 * * MON-THU", "duration": "6h", "timezone": "Europe/Berlin"}


def test_a_policy_takes_the_default_window_sets_its_own_or_opts_out_with_null() -> None:
    cfg = from_mapping(
        base(
            defaults={"window": BERLIN},
            freeze=[{"from": "2030-12-20T00:00:00Z", "to": "2030-12-24T00:00:00Z", "reason": "holidays"}],
            policies=[
                policy("a"),
                policy("b", window={"cron": "0 10 * * TUE", "duration": "2h", "timezone": "America/New_York"}),
                policy("c", window=None),
            ],
        )
    )
    a, b, c = (cfg.policy(n) for n in "abc")
    assert a.window == WindowConfig(cron="0 9 * * MON-THU", duration=timedelta(hours=6), timezone="Europe/Berlin")
    assert b.window is not None and b.window.timezone == "America/New_York"
    assert c.window is None
    assert [f.reason for f in a.freezes] == ["holidays"] and c.freezes == a.freezes  # a freeze holds every policy


def test_every_window_and_freeze_error_is_reported_at_once() -> None:
    found = errors(
        base(
            defaults={"window": {"cron": "0 9 * *", "duration": "6h"}},
            freeze=[
                {"from": "2030-12-20T00:00:00Z", "to": "2030-12-10T00:00:00Z"},
                {"from": "2030-12-20T00:00:00", "to": "2030-12-21T00:00:00Z"},
                {"from": "2030-01-01T00:00:00Z", "to": "2030-02-01T00:00:00Z"},
            ],
            policies=[
                policy("a", window={"cron": "0 9 * * MON", "duration": "1h", "timezone": "Mars/Olympus"}),
                policy("b", window={"cron": "0 9 1 * MON", "duration": "1h"}),
                policy("c", window={"cron": "0 9 * * 8", "duration": "1h"}),
                policy("d", window={"cron": "0 9 * * MON", "duration": "30s"}),
                policy("e"),
            ],
        )
    )
    text = "\n".join(found)
    assert "defaults.window: '0 9 * *' has 4 field(s): a cron expression has 5" in text
    assert "freeze[0]: ends (2030-12-10T00:00:00Z) before it starts (2030-12-20T00:00:00Z)" in text
    assert "freeze[1].from: 2030-12-20T00:00:00 has no time zone: add one" in text
    assert "policies[0].window.timezone: unknown time zone 'Mars/Olympus'" in text
    assert "policies[1].window: '0 9 1 * MON' restricts both the day of month (1) and the day of week" in text
    assert "policies[2].window: '0 9 * * 8' is not a cron expression: day of week '8' is not 0-7" in text
    assert "policies[3].window.duration: 30s is shorter than interval (1m)" in text
    # a 31-day freeze is longer than a 30d key with rotate_before 7d12h can wait (d and e)
    assert (
        "freeze[2]: lasts 31d, longer than a due key can wait in policy d (rotate_before (7d12h) - grace (1h)" in text
    )


def test_a_window_that_opens_too_rarely_is_refused_with_the_numbers() -> None:
    found = errors(
        base(
            policies=[
                policy("weekly", lifetime="7d", rotate_before="2d", window={"cron": "0 10 * * TUE", "duration": "2h"}),
            ]
        )
    )
    (issue,) = found
    assert issue.startswith("policies[0].window: 0 10 * * TUE for 2h (UTC) stays closed for up to 6d22h")
    assert "rotate_before (2d) - grace (1h) - interval (1m) = 1d22h59m" in issue
    assert "open the window more often or for longer, or raise rotate_before" in issue
    # the same window is fine for keys that can wait a week
    from_mapping(
        base(
            policies=[
                policy("weekly", lifetime="30d", rotate_before="8d", window={"cron": "0 10 * * TUE", "duration": "2h"})
            ]
        )
    )


def test_the_wait_a_policy_allows_counts_reload_timeout() -> None:
    reload = [{"type": "webhook", "url": "https://hooks.example.com/reload", "secret": {"env": "RELOAD_KEY"}}]
    plain = from_mapping(base(policies=[policy("a", lifetime="30d", rotate_before="7d")])).policy("a")
    assert window_span(plain, timedelta(minutes=1)) == timedelta(days=7) - timedelta(hours=1, minutes=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELOAD_KEY", "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
        reloading = from_mapping(
            base(policies=[policy("a", lifetime="30d", rotate_before="7d", reload=reload, reload_timeout="20m")])
        ).policy("a")
    assert window_span(reloading, timedelta(minutes=1)) == timedelta(days=7) - timedelta(hours=1, minutes=21)
    forever = from_mapping(base(policies=[policy("a", lifetime="never", rotate_every="30d")])).policy("a")
    assert window_span(forever, timedelta(minutes=1)) is None


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("0-2", ["Mon", "Tue", "Sun"]),
        ("*/2", ["Tue", "Thu", "Sat", "Sun"]),
        ("1-5/2", ["Mon", "Wed", "Fri"]),
        ("MON-THU", ["Mon", "Tue", "Wed", "Thu"]),
        ("fri-sun", ["Fri", "Sat", "Sun"]),
    ],
)
def test_days_of_the_week_mean_what_crontab5_says(field: str, days: list[str]) -> None:
    """APScheduler 3 numbers the week from Monday (agronholm/apscheduler#286) and ignores steps on named ranges:
    the expression is read as crontab(5) reads it."""
    from rotator.windows import _fire_at_or_after

    w = WindowConfig(cron=f"0 9 * * {field}", duration=timedelta(hours=1))
    t, seen = datetime(2026, 12, 6, tzinfo=UTC), set()  # a Sunday
    for _ in range(7):
        fire = _fire_at_or_after(w, t)
        assert fire is not None
        seen.add(fire.strftime("%a"))
        t = fire + timedelta(seconds=1)
    order = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert sorted(seen, key=order.index) == days


def test_the_longest_gap_follows_daylight_saving_time() -> None:
    w = WindowConfig(cron="0 9 * * MON-THU", duration=timedelta(hours=6), timezone="Europe/Berlin")
    gap, began = longest_gap(w, datetime(2026, 12, 6, tzinfo=UTC))
    # Thursday 15:00 CEST to Monday 09:00 CET, across the autumn change: 3 days 18 hours + the hour given back
    assert gap == timedelta(days=3, hours=19) and began.strftime("%a %H:%M") == "Thu 13:00"


def test_rotator_validate_exits_2_and_names_every_field(tmp_path: Path) -> None:
    cfg = base(
        defaults={"window": {"cron": "61 9 * * *", "duration": "1h"}},
        freeze=[{"from": "2030-12-20T00:00:00Z", "to": "2030-12-19T00:00:00Z"}],
    )
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run(
        [str(Path(sys.executable).parent / "rotator"), "-c", str(path), "validate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "defaults.window: '61 9 * * *' is not a cron expression" in run.stderr
    assert "freeze[0]: ends (2030-12-19T00:00:00Z) before it starts" in run.stderr


def test_daylight_saving_changes_open_a_window_as_cron_does() -> None:
    """The docstring of rotator.windows and docs/windows.md state this; the test keeps it true across APScheduler
    upgrades. A skipped wall time opens at the change, whether searched from before it or from the change."""
    from rotator.windows import _fire_at_or_after

    w = WindowConfig(cron="30 2 * * *", duration=timedelta(hours=1), timezone="Europe/Berlin")
    spring = _fire_at_or_after(w, datetime(2027, 3, 28, tzinfo=UTC))  # 02:30 does not exist in Berlin that day
    assert spring == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST
    assert _fire_at_or_after(w, spring) == spring
    assert _fire_at_or_after(w, spring + timedelta(seconds=1)) == datetime(2027, 3, 29, 0, 30, tzinfo=UTC)
    first = _fire_at_or_after(w, datetime(2027, 10, 31, tzinfo=UTC))  # 02:30 happens twice that day
    assert first == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    again = _fire_at_or_after(w, first + timedelta(seconds=1))
    assert again == datetime(2027, 10, 31, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("name", ["aws.example.yaml", "azure.example.yaml", "gcp.example.yaml"])
def test_the_commented_window_and_freeze_of_each_example_config_validate(name: str) -> None:
    """The examples show a window and a freeze as comments: uncommented, they must load as they are."""
    from rotator.config import loads

    root = Path(__file__).resolve().parent.parent
    text = (root / "config" / name).read_text()
    lines = []
    for ln in text.splitlines():
        if ln.startswith("  # window:"):
            ln = "  " + ln.removeprefix("  # ")
        elif ln.startswith("# freeze:"):
            ln = ln.removeprefix("# ")
        elif ln.startswith("#   - {from:"):
            ln = ln.removeprefix("#")
        lines.append(ln)
    uncommented = "\n".join(lines)
    assert "\nfreeze:" in uncommented and "  window: {cron:" in uncommented, name
    cfg = loads(uncommented, source=name)
    assert all(p.window is not None and p.window.timezone == "Europe/Berlin" for p in cfg.policies)
    assert all(len(p.freezes) == 1 for p in cfg.policies)
