"""The web app in a real browser: Debian's chromium driven by Playwright against `edge-verify serve`,
its camera a video of the packaged sample face (played in a loop), the door relay on gpiozero's
MockFactory. One server for the module; the tests run in order, each on what the previous left
(log in, enrol, see the welcome, read the audit, remove, see the refusal, ...). Screenshots of
every page go to $EDGE_VERIFY_ARTEFACTS (kept) or to pytest's temporary folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, make_video, run_cli
from tests.fleet_servers import free_port

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright absent: pip install 'edge-verify[web]'")
pytest.importorskip("fastapi", reason="the web extra is absent: pip install 'edge-verify[web]'")
pytest.importorskip("gpiozero", reason="gpiozero absent (the kiosk extra)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} absent: apt-get install chromium (.ci/run installs it)", allow_module_level=True)

expect = sync_api.expect


def start_server(args: list[str], log: Path, url: str, env: dict | None = None) -> subprocess.Popen:
    """`edge-verify serve ARGS` until it answers on ``url`` (its output in ``log``)."""
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "edge_verify.cli", "serve", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {log.read_text()}")
        try:
            httpx.get(url, verify=False, timeout=2)
            return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"serve did not answer within 90 s: {log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    folder = os.environ.get("EDGE_VERIFY_ARTEFACTS")
    path = Path(folder) / "web" if folder else tmp_path_factory.mktemp("web-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A store with an administrator, a kiosk TOML, and `edge-verify serve` on a free port."""
    root = tmp_path_factory.mktemp("web")
    video = root / "camera.avi"
    make_video(video, [("astronaut_check.jpg", 60), (None, 10)])  # 7 s at 10 frames/s, played in a loop
    store = root / "store" / "doors.db"
    config = root / "kiosk.toml"
    config.write_text(
        f'[kiosk]\nsource = "{video}"\nliveness = "off"\nliveness_sequence = "turn_left,blink"\ncooldown_s = 2.0\n'
        "reconnect_s = 0.0\nrelay_pin = 17\nrelay_pulse_s = 0.2\n"
    )
    r = run_cli("serve", "--set-admin", "alice", "--password-stdin", "--store", str(store), stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "serve.log"
    server = start_server(
        ["--config", str(config), "--store", str(store), "--port", str(port)],
        log,
        url + "/display/status",
        env={"GPIOZERO_PIN_FACTORY": "mock"},
    )
    yield {"url": url, "store": store, "config": config, "log": log, "root": root, "process": server}
    stop(server)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def admin(browser, site):
    """One logged-in browser context (a page of it) shared by the admin tests, in order."""
    context = browser.new_context(base_url=site["url"], viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def shot(page, artefacts: Path, name: str) -> None:
    page.screenshot(path=str(artefacts / f"{name}.png"), full_page=True)


def login(page, name: str, password: str):
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    return answer.value


# -- refusals before logging in ----------------------------------------------------------------
def test_admin_pages_without_a_session_are_refused(admin, site):
    page = admin
    page.goto("/admin")
    assert page.url.endswith("/login")  # sent to the login page, no admin content
    expect(page.locator("h1")).to_have_text("Administrator login")
    for path in ("/admin/people", "/admin/audit", "/admin/settings"):
        response = page.request.get(path, max_redirects=0)
        assert response.status == 303 and response.headers["location"] == "/login", path
    response = page.request.post("/admin/people/remove", form={"name": "astronaut"})
    assert response.status == 403


def test_a_wrong_password_is_refused(admin, site, artefacts):
    response = login(admin, "alice", "not the password")
    assert response.status == 401
    expect(admin.locator(".error")).to_have_text("Wrong name or password.")
    assert admin.context.cookies() == [] or all(c["name"] != "ev_session" for c in admin.context.cookies())
    shot(admin, artefacts, "login-refused")


def test_log_in(admin, site, artefacts):
    response = login(admin, "alice", PASSWORD)
    assert response.status == 303
    admin.wait_for_url("**/admin/people")
    cookie = next(c for c in admin.context.cookies() if c["name"] == "ev_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    expect(admin.locator("nav .who")).to_have_text("alice")
    shot(admin, artefacts, "people-empty")


def test_a_form_without_its_csrf_token_is_refused(admin, site):
    """A logged-in browser's cookie alone does not make a form valid (a cross-site post has no token)."""
    for form in ({"name": "astronaut"}, {"name": "astronaut", "csrf": "forged"}):
        response = admin.request.post("/admin/people/enrol-live", form=form)
        assert response.status == 403 and "CSRF" in response.text()
    response = admin.request.post("/logout", form={})
    assert response.status == 403
    admin.goto("/admin/people")
    expect(admin.locator("nav .who")).to_have_text("alice")  # still logged in, nothing done


# -- people ------------------------------------------------------------------------------------
def test_enrol_from_the_kiosk_camera(admin, site, artefacts):
    admin.goto("/admin/people")
    admin.fill("#enrol-live input[name=name]", "astronaut")
    admin.click("#enrol-live button")
    admin.wait_for_url("**/admin/people/enrol/*")
    expect(admin.locator("body")).to_have_attribute("data-enrol", re.compile("enrolled|failed"), timeout=40_000)
    expect(admin.locator("#result")).to_contain_text("enrolled astronaut from 5 frame(s)")
    expect(admin.locator("#preview")).to_have_attribute("src", re.compile("^blob:"))  # the camera was shown
    shot(admin, artefacts, "enrol-live")
    # the same face under another name: refused at its first good frame, and the refusal audited
    admin.goto("/admin/people")
    admin.fill("#enrol-live input[name=name]", "astronaut2")
    admin.click("#enrol-live button")
    expect(admin.locator("body")).to_have_attribute("data-enrol", "failed", timeout=40_000)
    expect(admin.locator("#result")).to_contain_text("already enrolled as astronaut")
    shot(admin, artefacts, "enrol-live-refused")


def test_enrol_from_uploaded_photos_and_a_duplicate_refused(admin, site, artefacts):
    admin.goto("/admin/people")
    import cv2
    import numpy as np

    wall = site["root"] / "wall.png"  # a photo without a face: named and left out
    cv2.imwrite(str(wall), np.full((240, 320, 3), 128, np.uint8))
    admin.fill("#enrol-photos input[name=name]", "cameraman")
    admin.set_input_files("#enrol-photos input[type=file]", [str(SAMPLES / "cameraman.jpg"), str(wall)])
    admin.click("#enrol-photos button")
    expect(admin.locator(".message")).to_contain_text("enrolled cameraman from 1 frame(s)")
    expect(admin.locator(".message")).to_contain_text("left out 1: wall.png: no face found")
    shot(admin, artefacts, "enrol-photos")
    # the astronaut again under another name: "already enrolled as ..." and nothing stored
    admin.goto("/admin/people")
    admin.fill("#enrol-photos input[name=name]", "impostor")
    admin.set_input_files("#enrol-photos input[type=file]", [str(SAMPLES / "astronaut_enroll.jpg")])
    admin.click("#enrol-photos button")
    expect(admin.locator(".error")).to_contain_text("match an enrolled identity: astronaut")
    shot(admin, artefacts, "enrol-duplicate")


def test_the_people_are_listed(admin, site, artefacts):
    admin.goto("/admin/people")
    expect(admin.locator("#people td.name")).to_have_text(["astronaut", "cameraman"])
    shot(admin, artefacts, "people")


# -- the display -------------------------------------------------------------------------------
def test_the_display_welcomes_the_enrolled_person_and_names_nobody_else(browser, site, artefacts):
    context = browser.new_context(base_url=site["url"], viewport={"width": 800, "height": 480})  # a 7" screen
    page = context.new_page()
    statuses = []
    page.on("response", lambda r: statuses.append(r.text()) if r.url.endswith("/display/status") else None)
    page.goto("/")
    expect(page.locator("#outcome")).to_have_text("Welcome astronaut", timeout=30_000)
    expect(page.locator("#preview")).to_have_attribute("src", re.compile("^blob:"))
    shot(page, artefacts, "display-welcome")
    context.close()
    assert statuses and all(json.loads(s) is not None for s in statuses)  # strict JSON (no NaN)
    assert not any("cameraman" in s or "score" in s or "audit" in s for s in statuses)
    # and the terminal (or journal) running `serve` has one line per decision, as `kiosk` prints them
    assert re.search(r"ACCEPTED astronaut: score [01]\.\d{4} >= 0\.\d{4}.*\[audit \d+\]", site["log"].read_text())


# -- the audit ---------------------------------------------------------------------------------
def test_the_audit_shows_the_decision_its_relay_outcome_and_a_verified_chain(admin, site, artefacts):
    admin.goto("/admin/audit?command=kiosk")
    row = admin.locator("#audit tbody tr.accepted").first
    expect(row).to_contain_text("astronaut")
    expect(row.locator("td.actions")).to_contain_text("relay: ok")
    expect(admin.locator("#chain")).to_have_text(re.compile("^Chain verified"))
    shot(admin, artefacts, "audit")
    admin.goto("/admin/audit")
    expect(admin.locator("#audit")).to_contain_text("web alice: kiosk camera")  # the admin's name on her enrolment
    with admin.expect_download() as download:
        admin.click("text=Export CSV")
    text = Path(download.value.path()).read_text()
    assert text.startswith("time,command,claimed,matched") and "astronaut" in text


# -- remove ------------------------------------------------------------------------------------
def test_remove_with_confirmation_then_the_next_decision_is_refused(admin, browser, site, artefacts):
    admin.goto("/admin/people")
    admin.click("#people >> text=Remove… >> nth=0")
    expect(admin.locator("h1")).to_have_text("Remove astronaut?")
    shot(admin, artefacts, "remove-confirm")
    admin.click("button.danger")
    expect(admin.locator(".message")).to_have_text("removed astronaut")
    admin.goto("/admin/people")
    expect(admin.locator("#people td.name")).to_have_text(["cameraman"])

    context = browser.new_context(base_url=site["url"], viewport={"width": 800, "height": 480})
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#outcome")).to_have_text("Not recognised", timeout=30_000)
    shot(page, artefacts, "display-refused")
    context.close()

    admin.goto("/admin/audit")
    rows = admin.locator("#audit tbody tr")
    texts = rows.all_inner_texts()
    removed = next(i for i, t in enumerate(texts) if "\tremove\t" in t)
    after = [t for t in texts[:removed] if "\tkiosk\t" in t]  # newest first: rows above the removal
    assert after and all("refused" in t and "astronaut" not in t for t in after), texts[: removed + 1]
    assert "web alice" in texts[removed]


# -- settings, calibration, doctor -------------------------------------------------------------
def test_settings_turn_the_liveness_challenge_on_and_the_display_prompts(admin, browser, site, artefacts):
    admin.goto("/admin/settings")
    admin.fill("#s-liveness", "sometimes")
    admin.click("text=Save and restart the kiosk")
    expect(admin.locator(".error")).to_contain_text("kiosk setting liveness = 'sometimes'")  # validated as the TOML
    assert 'liveness = "off"' in site["config"].read_text()
    admin.fill("#s-liveness", "challenge")  # stricter: allowed (the fixed sequence is the file's)
    admin.click("text=Save and restart the kiosk")
    expect(admin.locator(".message")).to_contain_text("the kiosk restarted")
    assert 'liveness = "challenge"' in site["config"].read_text()
    shot(admin, artefacts, "settings")
    admin.fill("#s-liveness", "off")  # weaker: only in the file
    admin.click("text=Save and restart the kiosk")
    expect(admin.locator(".error")).to_contain_text("makes the door less strict")
    assert 'liveness = "challenge"' in site["config"].read_text()

    context = browser.new_context(base_url=site["url"], viewport={"width": 800, "height": 480})
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#prompt")).to_have_text("Turn your head to your left", timeout=30_000)
    expect(page.locator("#progress")).to_have_text("Step 1 of 2")
    shot(page, artefacts, "display-prompt")
    context.close()
    admin.goto("/admin/audit?command=admin")
    expect(admin.locator("#audit")).to_contain_text("settings changed: liveness")


def test_doctor_and_calibration_pages(admin, site, artefacts):
    admin.goto("/admin/doctor")
    admin.click("text=Run the checks")
    expect(admin.locator("#checks")).to_contain_text("store")
    expect(admin.locator("#verdict")).to_have_text("All checks pass.")
    shot(admin, artefacts, "doctor")
    admin.goto("/admin/calibration")
    admin.fill("input[name=folder]", str(site["root"] / "no such folder"))
    admin.click("button:has-text('Measure')")
    expect(admin.locator(".error")).to_contain_text("not a folder")
    shot(admin, artefacts, "calibration")


@pytest.mark.shared_data
def test_calibration_shows_the_figures_and_refuses_to_apply_a_looser_threshold(admin, site, shared_data, artefacts):
    """The figures first; a threshold looser than the bundle's default is not stored from the browser."""
    admin.goto("/admin/calibration")
    admin.fill("input[name=folder]", str(shared_data / "faces"))
    admin.fill("input[name=far]", "0.2")
    admin.click("button:has-text('Measure')")
    expect(admin.locator("#figures")).to_contain_text("Threshold at FAR 0.2", timeout=60_000)
    shot(admin, artefacts, "calibration-figures")
    looser = "yes" in admin.locator("#figures tr:has-text('Looser') td").inner_text()
    admin.click("button:has-text('Apply this threshold')")
    if looser:
        expect(admin.locator(".error")).to_contain_text("looser than the bundle's")
    else:
        expect(admin.locator("h2")).to_have_text("Applied")


def test_sighup_reloads_the_settings_file_and_a_bad_edit_keeps_the_running_ones(site):
    import signal

    def logged(text: str) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if text in site["log"].read_text():
                return True
            time.sleep(0.2)
        return False

    good = site["config"].read_text()
    site["config"].write_text(good.replace('liveness = "challenge"', 'liveness = "bogus"'))
    site["process"].send_signal(signal.SIGHUP)  # systemctl reload
    assert logged("reload failed, keeping the running configuration"), site["log"].read_text()
    site["config"].write_text(good)
    site["process"].send_signal(signal.SIGHUP)
    assert logged("configuration reloaded"), site["log"].read_text()
    assert site["process"].poll() is None


# -- the login limit (last: it locks this address out) -----------------------------------------
def test_failed_logins_are_rate_limited(browser, site, artefacts):
    context = browser.new_context(base_url=site["url"])
    page = context.new_page()
    codes = []
    while 429 not in codes and len(codes) < 7:
        codes.append(login(page, "alice", f"guess {len(codes)}").status)
    # 5 failures from this address within 5 minutes (one of them may be the wrong-password test's)
    assert codes[-1] == 429 and set(codes[:-1]) == {401} and len(codes) - 1 in (4, 5), codes
    response = login(page, "alice", PASSWORD)  # even the right password waits now
    assert response.status == 429
    expect(page.locator(".error")).to_contain_text("Too many failed logins")
    shot(page, artefacts, "login-rate-limited")
    context.close()


def test_a_forged_forwarded_for_header_does_not_lift_the_login_limit(site):
    """This address is locked out now (the test above); a header naming another client, and another
    name, must not make its next guess count as someone else's."""
    import httpx

    with httpx.Client(base_url=site["url"]) as client:
        page = client.get("/login")
        token = page.text.split('name="csrf" value="')[1].split('"')[0]
        answer = client.post(
            "/login",
            data={"csrf": token, "name": "bob", "password": "guess"},
            headers={"X-Forwarded-For": "10.9.8.7", "Forwarded": "for=10.9.8.7"},
        )
    assert answer.status_code == 429, answer.status_code


# -- TLS ---------------------------------------------------------------------------------------
def test_listen_serves_only_https_with_the_printed_fingerprint(site, tmp_path):
    """--listen names an address: a self-signed certificate is made, its fingerprint printed, and
    plain HTTP is not served."""
    import hashlib
    import ssl

    import httpx

    r = run_cli("serve", "--source", "x.avi", "--tls-cert", "c.pem", "--store", str(site["store"]))
    assert r.returncode == 2 and "--tls-cert/--tls-key go with --listen" in r.stderr
    port = free_port()
    log = tmp_path / "serve.log"
    store = tmp_path / "tls" / "doors.db"
    video = site["root"] / "camera.avi"
    server = start_server(
        ["--source", str(video), "--store", str(store), "--listen", "127.0.0.1", "--port", str(port)],
        log,
        f"https://127.0.0.1:{port}/display/status",
    )
    try:
        printed = re.search(r"SHA-256 fingerprint ([0-9A-F:]{95})", log.read_text())
        assert printed, log.read_text()
        pem = ssl.get_server_certificate(("127.0.0.1", port))
        served = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
        assert printed[1].replace(":", "") == served
        ca = ssl.create_default_context(cafile=str(tmp_path / "tls" / "web-cert.pem"))
        assert httpx.get(f"https://127.0.0.1:{port}/display/status", verify=ca).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/display/status", timeout=5)
        login_page = httpx.get(f"https://127.0.0.1:{port}/login", verify=ca)
        assert "Secure" in login_page.headers["set-cookie"] and "HttpOnly" in login_page.headers["set-cookie"]
    finally:
        stop(server)
    assert server.returncode == 0, log.read_text()  # SIGTERM: the loop stopped, its actions closed
    r = run_cli("audit", "--verify", "--store", str(store))
    assert r.returncode == 0, r.stdout + r.stderr


# -- the end (the module's server stops here) ----------------------------------------------------
def test_ctrl_c_stops_serve_as_sigterm_does(site):
    """Ctrl-C at the terminal stops the loop and closes its actions, exit 0, as `kiosk` does."""
    import signal

    server = site["process"]
    server.send_signal(signal.SIGINT)
    assert server.wait(20) == 0, site["log"].read_text()
    assert "interrupted" not in site["log"].read_text()
    r = run_cli("audit", "--verify", "--store", str(site["store"]))
    assert r.returncode == 0, r.stdout + r.stderr
