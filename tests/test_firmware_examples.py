"""firmware_examples/: unit file, install scripts, example configs, and the attendance flow."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_verify.kiosk import KioskConfig
from tests.conftest import ROOT, SAMPLES, make_video, run_cli

EXAMPLES = ROOT / "firmware_examples"
SCRIPTS = sorted(EXAMPLES.glob("*/*.sh")) + sorted((ROOT / "scripts").glob("*.sh"))


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    unit = (EXAMPLES / "raspberry_pi" / "edge-verify-kiosk.service").read_text()
    assert "ExecStart=/opt/edge-verify/venv/bin/edge-verify kiosk --config /etc/edge-verify/kiosk.toml" in unit
    # point the install prefix at this checkout's interpreter so the executable check can pass
    exe = Path(shutil.which("edge-verify") or Path(sys.executable).with_name("edge-verify"))
    local = tmp_path / "edge-verify-kiosk.service"
    local.write_text(unit.replace("/opt/edge-verify/venv/bin/edge-verify", str(exe)))
    r = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if str(local) in ln or "Unknown" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(ROOT)) for s in SCRIPTS])
def test_install_scripts_pass_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; CI installs it)")
    r = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("config", ["raspberry_pi/kiosk.toml", "attendance/attendance.toml"])
def test_example_configs_load(config):
    cfg = KioskConfig.from_toml(EXAMPLES / config)
    assert cfg.debounce >= 1 and cfg.cooldown_s > 0


def test_door_example_is_no_looser_than_the_kiosk_defaults():
    """The Pi's door configuration is installed as is: its liveness settings may only tighten the defaults."""
    door, default = KioskConfig.from_toml(EXAMPLES / "raspberry_pi" / "kiosk.toml"), KioskConfig()
    assert door.liveness == "challenge" and door.liveness_sequence is None and not door.allow_looser
    assert door.threshold is None and door.operating_point in (None, "default", "strict")
    for name in ("liveness_step_timeout_s", "liveness_max_failures", "liveness_alarm_failures"):
        assert getattr(door, name) <= getattr(default, name), name
    assert door.liveness_alarm_failures_per_hour <= default.liveness_alarm_failures_per_hour
    assert door.liveness_alarm_window_s >= default.liveness_alarm_window_s
    assert door.liveness_lockout_s >= default.liveness_lockout_s


def test_attendance_flow(tmp_path, store_path):
    s = ["--store", str(store_path)]
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    camera = tmp_path / "desk.avi"
    make_video(camera, [("astronaut_check.jpg", 8), (None, 2), ("cameraman.jpg", 8)])
    config = tmp_path / "attendance.toml"
    text = (EXAMPLES / "attendance" / "attendance.toml").read_text()
    config.write_text(
        text.replace("source = 0", f"source = '{camera}'")
        .replace("status_port = 8000", "max_frames = 18")
        .replace('liveness = "passive"', 'liveness = "off"')  # the generated camera shows photos
    )
    r = run_cli("kiosk", "--config", str(config), "--json", *s)
    assert r.returncode == 0, r.stderr

    def export(day: str) -> list[str]:
        r = subprocess.run(
            ["bash", str(EXAMPLES / "attendance" / "export_day.sh"), day, *s],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        )
        assert r.returncode == 0, r.stderr
        return (tmp_path / f"attendance-{day}.csv").read_text().splitlines()

    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    assert len(export(yesterday)) == 1  # the header only: a day's export holds that day
    rows = export(time.strftime("%Y-%m-%d"))
    assert len(rows) == 3  # header, the astronaut once (cooldown one hour), the stranger once
    assert ",astronaut," in rows[1] and rows[1].split(",")[6] == "1"
    assert rows[2].split(",")[6] == "0"
