"""Attacks on the web app that need no camera and no browser: the app over a real store, driven
through Starlette's test client (which calls it from a client address that is not this machine)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

pytest.importorskip("fastapi", reason="the web extra is absent: pip install 'edge-verify[web]'")

from edge_verify.errors import TemplateIntegrityError, UsageError  # noqa: E402
from edge_verify.store import TemplateStore  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def app_store(store_path, verifier):
    from edge_verify.web.security import hash_password

    store = TemplateStore(store_path)
    store.pin_bundle(verifier.bundle)
    store.set_admin("alice", hash_password(PASSWORD), source="test")
    yield store
    store.close()


def client_for(store, host="127.0.0.1"):
    import argparse

    from starlette.testclient import TestClient

    from edge_verify.web.app import create_app
    from edge_verify.web.context import WebContext
    from edge_verify.web.preview import FrameHub

    ctx = WebContext(argparse.Namespace(store=str(store.path), key_file=None), store, FrameHub())
    return TestClient(create_app(ctx), base_url=f"http://{host}", follow_redirects=False), ctx


def log_in(client) -> str:
    page = client.get("/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    answer = client.post("/login", data={"csrf": token, "name": "alice", "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    people = client.get("/admin/people")
    return people.text.split('name="csrf" value="')[1].split('"')[0]


def test_the_password_is_stored_as_a_memory_hard_hash_only(app_store):
    record = app_store.admin("alice")
    assert record["kdf"] == "scrypt" and record["n"] >= 2**15 and record["r"] >= 8
    # OWASP's scrypt table at this memory (N=2^15, r=8) asks for p=3: the work of one guess at least that
    assert record["n"] * record["r"] * record["p"] >= 2**15 * 8 * 3
    raw = sqlite3.connect(app_store.path).execute("SELECT group_concat(value) FROM meta").fetchone()[0]
    assert PASSWORD not in raw and PASSWORD.encode().hex() not in raw
    from edge_verify.web.security import check_password, hash_password

    assert check_password(record, PASSWORD) and not check_password(record, PASSWORD + "!")
    with pytest.raises(UsageError, match="at least 10 characters"):
        hash_password("short")


def test_an_administrator_written_into_the_file_without_the_key_is_refused(app_store, store_path):
    """Someone who can write the store file but has no key cannot add (or replace) an administrator."""
    from edge_verify.web.security import hash_password

    app_store.close()
    forged = json.dumps({"data": json.dumps(hash_password("mallory's password"), sort_keys=True), "mac": "00" * 32})
    with sqlite3.connect(store_path) as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('admin:mallory', ?)", (forged,))
    with pytest.raises(TemplateIntegrityError, match="the web administrator 'mallory'"):
        TemplateStore(store_path)


def test_another_machine_sees_no_display_without_logging_in(app_store):
    client, _ = client_for(app_store)  # the test client's address is "testclient": not this machine
    for path in ("/", "/display/status", "/display/preview.jpg"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/login", path
    log_in(client)
    assert client.get("/display/status").json()["state"] == "stopped"


def test_a_page_reaching_the_local_app_under_another_host_name_is_refused(app_store):
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 is not served."""
    client, _ = client_for(app_store, host="attacker.example")
    assert client.get("/login").status_code == 400
    local, _ = client_for(app_store, host="localhost")
    assert local.get("/login").status_code == 200


def test_names_are_shown_as_text_not_markup(app_store, verifier):
    import numpy as np

    name = "<img src=x onerror=alert(1)>"
    vector = np.ones(verifier.bundle.embedding_size, np.float32)
    app_store.put(name, vector / np.linalg.norm(vector), verifier.bundle.fingerprint, 1)
    client, _ = client_for(app_store)
    log_in(client)
    page = client.get("/admin/people").text
    assert name not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "script-src 'self'" in client.get("/admin/people").headers["content-security-policy"]


def test_the_audit_page_shows_a_row_edited_behind_its_back(app_store):
    client, _ = client_for(app_store)
    log_in(client)
    page = client.get("/admin/audit").text
    assert "Chain verified" in page and "TAMPERED" not in page
    with sqlite3.connect(app_store.path) as db:  # someone with the file but not the key rewrites who logged in
        db.execute("UPDATE audit SET claimed = 'bob' WHERE command = 'login'")
    page = client.get("/admin/audit").text
    assert "Chain TAMPERED" in page and "was edited or inserted outside edge-verify" in page


def test_logging_out_ends_the_session_and_logins_are_audited(app_store):
    client, _ = client_for(app_store)
    csrf = log_in(client)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/admin/people").status_code == 303  # the old cookie opens nothing
    rows = app_store.audit_log(command="login") + app_store.audit_log(command="logout")
    assert [(r.command, r.claimed, r.accepted) for r in rows] == [("login", "alice", True), ("logout", "alice", True)]


def test_settings_cannot_set_a_command_to_run(app_store, tmp_path):
    """A stolen session must not become a shell: commands are set in the TOML file only."""
    from edge_verify.kiosk import KioskConfig

    client, ctx, csrf = settings_client(app_store, tmp_path, '[kiosk]\nsource = "x.avi"\n')
    answer = client.post("/admin/settings", data=settings_form(csrf, ctx.runner.config, command="touch /tmp/owned"))
    assert answer.status_code == 200, answer.text
    assert ctx.runner.config.command is None and "touch" not in ctx.config_path.read_text()
    assert KioskConfig.from_toml(ctx.config_path) == ctx.runner.config  # the file reads back as what runs


class StubRunner:
    """The settings page's view of the loop (its configuration and a restart); no camera here."""

    running = False
    kiosk = None
    error = None

    def __init__(self, config):
        self.config = config

    def restart(self, config):
        self.config = config


def settings_client(store, tmp_path, toml: str):
    from edge_verify.kiosk import KioskConfig

    client, ctx = client_for(store)
    config_path = tmp_path / "kiosk.toml"
    config_path.write_text(toml)
    ctx.runner, ctx.config_path = StubRunner(KioskConfig.from_toml(config_path)), config_path
    ctx.load_config = lambda: KioskConfig.from_toml(config_path)
    return client, ctx, log_in(client)


def settings_form(csrf: str, config, **changes) -> dict:
    """The settings form as the page fills it (the running values), with ``changes``."""
    from edge_verify.web.routers.site import setting_fields

    form = {"csrf": csrf}
    for f in setting_fields():
        value = getattr(config, f.name)
        form[f.name] = "" if value is None else ", ".join(value) if isinstance(value, list) else str(value).lower()
    return {**form, **changes}


@pytest.mark.parametrize(
    "changes",
    [
        {"allow_looser": "true", "threshold": "0.01"},  # any face would match
        {"threshold": "0.01"},
        {"liveness": "off"},  # a photo would pass
        {"liveness": "passive"},
        {"liveness_sequence": "blink"},  # a known challenge: a prepared video answers it
        {"source": "rtsp://attacker.example/replay"},  # the camera replaced by someone else's stream
        {"allow_unencrypted_camera": "true"},  # a camera stream anyone on the network can replace
        {"identity": ""},  # 1:1 for one person widened to everyone enrolled
        {"webhook_allow_hosts": "attacker.example", "webhook": "http://attacker.example/"},  # decisions sent away
        {"webhook": "http://127.0.0.1:2375/containers/create"},  # posted to another service of the device
        {"relay_pin": "22"},  # pulses another pin (another door, an alarm)
        {"relay_pulse_s": "86400"},  # the door held open all day
        {"liveness_max_failures": "1000", "liveness_lockout_s": "0"},  # unlimited presentation attempts
        {"debounce": "1"},
    ],
)
def test_a_stolen_session_cannot_make_the_door_less_strict(app_store, tmp_path, changes):
    """Settings that widen who or what gets in (or where decisions go, or which pin fires) are set in
    the file only; from the browser a setting may only make the door stricter."""
    toml = (
        '[kiosk]\nsource = "x.avi"\nidentity = "alice"\nliveness = "challenge"\nrelay_pin = 17\n'
        "relay_pulse_s = 1.0\ndebounce = 3\n"
    )
    client, ctx, csrf = settings_client(app_store, tmp_path, toml)
    before = ctx.runner.config
    client.post("/admin/settings", data=settings_form(csrf, before, **changes))
    from edge_verify.kiosk import KioskConfig

    assert ctx.runner.config == before and KioskConfig.from_toml(ctx.config_path) == before


def test_settings_can_make_the_door_stricter_and_change_plain_timings(app_store, tmp_path):
    client, ctx, csrf = settings_client(app_store, tmp_path, '[kiosk]\nsource = "x.avi"\nliveness = "passive"\n')
    changes = {"liveness": "challenge", "cooldown_s": "5", "debounce": "4", "relay_pulse_s": "0.5"}
    answer = client.post("/admin/settings", data=settings_form(csrf, ctx.runner.config, **changes))
    assert answer.status_code == 200, answer.text
    config = ctx.runner.config
    assert (config.liveness, config.cooldown_s, config.debounce, config.relay_pulse_s) == ("challenge", 5.0, 4, 0.5)
    from edge_verify.kiosk import KioskConfig

    assert KioskConfig.from_toml(ctx.config_path) == config
    weaker = client.post("/admin/settings", data=settings_form(csrf, config, liveness="off"))
    assert weaker.status_code == 400 and "liveness" in weaker.text and "in the file" in weaker.text


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--set-admin", "alice", "--password-stdin"], "short\n", "at least 10 characters"),
        (["--set-admin", "bad\nname", "--password-stdin"], PASSWORD + "\n", "name"),
        ([], None, "name the camera: --source 0"),
        (["--source", "x.avi", "--preview-fps", "0"], None, "--preview-fps 0: use 0.5..30"),
        (["--source", "x.avi", "--listen", "0.0.0.0", "--tls-cert", "c.pem"], None, "give both --tls-cert and"),
    ],
)
def test_serve_refuses_bad_input_in_one_line_and_stores_nothing(store_path, args, stdin, message):
    r = run_cli("serve", "--store", str(store_path), *args, stdin=stdin)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not store_path.exists()  # refused before anything was written


def test_importing_the_package_and_its_cli_loads_no_web_stack():
    code = (
        "import sys, edge_verify, edge_verify.cli, edge_verify.kiosk; "
        "print([m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', 'jinja2')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _chunks(total: int, prefix: bytes = b"csrf=x&name=alice&password="):
    """A form body streamed in chunks with no Content-Length (Transfer-Encoding: chunked)."""
    yield prefix
    for _ in range(total // 2**16):
        yield b"a" * 2**16


BOUNDARY = "x" * 16
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="photos"; filename="big.jpg"\r\n'
    "Content-Type: image/jpeg\r\n\r\n"
).encode()
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_an_oversized_login_post_without_a_length_is_refused_before_it_fills_the_disk(app_store):
    """Nobody logged in: a chunked body has no Content-Length to check, and a file part of it would
    be spooled to disk whole before the CSRF check; the size must be counted as it arrives."""
    client, _ = client_for(app_store)
    client.get("/login")
    answer = client.post("/login", content=_chunks(8 * 2**20, FILE_PART), headers=MULTIPART)
    assert answer.status_code == 413 and "larger than 64 KB" in answer.text, (answer.status_code, answer.text)


def test_an_oversized_upload_without_a_length_is_refused(app_store):
    from edge_verify.web.deps import MAX_FORM_BYTES

    client, _ = client_for(app_store)
    log_in(client)
    answer = client.post(
        "/admin/people/enrol-photos", content=_chunks(MAX_FORM_BYTES + 2**20, FILE_PART), headers=MULTIPART
    )
    assert answer.status_code == 413, answer.status_code
    assert client.get("/admin/people").status_code == 200  # still logged in, the app still answers


def test_changing_a_password_ends_the_sessions_opened_with_the_old_one(app_store):
    """A stolen session (or a browser left logged in) stops working once the password is changed
    with `serve --set-admin` (from another process, on the store)."""
    from edge_verify.web.security import hash_password

    client, _ = client_for(app_store)
    log_in(client)
    with TemplateStore(app_store.path) as cli_store:
        cli_store.set_admin("alice", hash_password("a new password, not the stolen one"), source="cli")
    answer = client.get("/admin/people")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert client.get("/display/status").status_code == 303  # from another machine the display needs it too


def test_a_self_signed_key_made_over_a_left_over_file_is_readable_by_its_owner_only(tmp_path):
    """A key file left readable by others (a half-finished earlier start, a copy) is rewritten: the
    new key must not inherit its permissions."""
    import os
    import stat

    from edge_verify.web.tls import self_signed

    (tmp_path / "web-key.pem").write_text("old")
    os.chmod(tmp_path / "web-key.pem", 0o644)
    cert, key, made = self_signed(tmp_path, "127.0.0.1")
    assert made and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_logging_in_again_ends_the_session_the_browser_had(app_store):
    """A fresh session at each login, and the one the browser held before is ended (a copy taken of
    it earlier opens nothing)."""
    from edge_verify.web.deps import SESSION_COOKIE

    client, _ = client_for(app_store)
    log_in(client)
    before = client.cookies.get(SESSION_COOKIE)
    log_in(client)
    assert client.cookies.get(SESSION_COOKIE) != before
    assert client.get("/admin/people").status_code == 200
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, before)
    assert client.get("/admin/people").status_code == 303


def test_the_login_limit_forgets_failures_once_they_age_out():
    """Many clients and names (an IPv6 LAN has plenty) must not grow the limiter's memory for ever."""
    from edge_verify.web.security import LoginLimiter

    now = [0.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for i in range(5000):
        limiter.failed(f"client:fd00::{i:x}", f"name:guess{i}")
    assert limiter.retry_after("client:fd00::1") == 0  # one failure each: nobody locked out
    now[0] += limiter.window_s + 1
    limiter.failed("client:fd00::ffff", "name:alice")
    assert len(limiter._seen) == 2


def test_every_route_but_the_login_and_the_local_display_needs_a_session_and_every_post_its_token(app_store):
    """Walk the app's own route table, so a route added later without its guard fails here: without
    a session a page sends to the login and a post is refused; with one, a post without the CSRF token
    is refused and changes nothing."""
    client, _ = client_for(app_store)
    public = {("GET", "/login"), ("POST", "/login")}
    routes = [
        (method.upper(), path.replace("{job_id}", "x"))
        for path, methods in client.app.openapi()["paths"].items()  # every route, built from the app's own
        for method in methods
        if (method.upper(), path) not in public
    ]
    assert len(routes) >= 15, routes
    for method, path in routes:
        answer = client.request(method, path, params={"name": "alice"}, data={"name": "mallory"})
        expected = (303, 403) if method == "GET" else (403,)
        assert answer.status_code in expected, (method, path, answer.status_code)
        if answer.status_code == 303:
            assert answer.headers["location"] == "/login", (method, path)
    log_in(client)
    audit_rows = len(app_store.audit_log(1000))
    for method, path in routes:
        if method == "POST":
            answer = client.post(path, data={"name": "mallory", "folder": "/", "csrf": ""})
            assert answer.status_code == 403 and "CSRF" in answer.text, (path, answer.status_code)
    assert len(app_store.audit_log(1000)) == audit_rows  # nothing was done (every admin action is audited)


def test_a_login_being_checked_does_not_freeze_the_other_pages(app_store, monkeypatch):
    """The memory-hard hash takes a while (most on a Pi): run on the server's event loop, every guess
    would freeze the display and the admin pages for that long. Here the hash waits until another
    page has been served; it must be served meanwhile."""
    import asyncio
    import threading

    import httpx

    from edge_verify.web import security

    client, _ = client_for(app_store)
    real, hashing, served = security._scrypt, threading.Event(), threading.Event()
    waited = []

    def slow_scrypt(*args):
        hashing.set()
        waited.append(served.wait(10))
        return real(*args)

    monkeypatch.setattr(security, "_scrypt", slow_scrypt)

    async def main():
        transport = httpx.ASGITransport(app=client.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            page = await web.get("/login")
            token = page.text.split('name="csrf" value="')[1].split('"')[0]
            login = asyncio.create_task(web.post("/login", data={"csrf": token, "name": "alice", "password": "x" * 12}))
            await asyncio.to_thread(hashing.wait, 10)
            other = await web.get("/display/status")
            served.set()
            return (await login).status_code, other.status_code

    assert asyncio.run(main()) == (401, 200) and waited == [True]


def test_concurrent_guesses_cannot_outrun_the_login_limit(app_store):
    """Guesses sent all at once: each waits for the one before, so the sixth already sees five failures."""
    import asyncio

    import httpx

    client, _ = client_for(app_store)

    async def main():
        transport = httpx.ASGITransport(app=client.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            page = await web.get("/login")
            token = page.text.split('name="csrf" value="')[1].split('"')[0]
            guesses = [{"csrf": token, "name": "alice", "password": f"guess number {i}"} for i in range(8)]
            answers = await asyncio.gather(*(web.post("/login", data=g) for g in guesses))
            return sorted(a.status_code for a in answers)

    assert asyncio.run(main()) == [401] * 5 + [429] * 3


def test_saving_settings_does_not_undo_an_edit_of_the_file_not_yet_reloaded(app_store, tmp_path):
    """The file says more than the running kiosk (an edit waiting for `systemctl reload`, e.g. a
    stricter identity); a save from the browser must not write the running values over it."""
    client, ctx, csrf = settings_client(app_store, tmp_path, '[kiosk]\nsource = "x.avi"\n# the lobby\n')
    edited = '[kiosk]\nsource = "x.avi"\nidentity = "alice"\n# the lobby\n'
    ctx.config_path.write_text(edited)
    answer = client.post("/admin/settings", data=settings_form(csrf, ctx.runner.config, cooldown_s="5"))
    assert answer.status_code == 400 and "reload" in answer.text
    assert ctx.config_path.read_text() == edited and ctx.runner.config.cooldown_s == 10.0


def test_a_removed_administrator_is_logged_out_and_cannot_log_in(app_store):
    """Someone who leaves the site: `serve --remove-admin NAME` ends her sessions and her password."""
    client, _ = client_for(app_store)
    log_in(client)
    r = run_cli("serve", "--store", str(app_store.path), "--remove-admin", "alice")
    assert r.returncode == 0 and "administrator alice removed" in r.stdout, r.stderr
    assert client.get("/admin/people").status_code == 303
    page = client.get("/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/login", data={"csrf": token, "name": "alice", "password": PASSWORD}).status_code == 401
    removals = [r for r in app_store.audit_log(command="admin") if r.detail == "administrator removed"]
    assert app_store.admins() == [] and [(r.claimed, r.source) for r in removals] == [("alice", "cli")]
    again = run_cli("serve", "--store", str(app_store.path), "--remove-admin", "alice")
    assert again.returncode == 2 and "no administrator 'alice'" in again.stderr, again.stderr


def test_a_settings_save_that_cannot_be_written_whole_leaves_the_file_as_it_was(app_store, tmp_path):
    """A full disk (here: a file-size limit) mid-write must not leave a truncated TOML that the
    kiosk cannot start from at the next boot."""
    import resource
    import signal

    from edge_verify.kiosk import KioskConfig

    toml = '[kiosk]\nsource = "x.avi"\n'
    client, ctx, csrf = settings_client(app_store, tmp_path, toml)
    form = settings_form(csrf, ctx.runner.config, cooldown_s="5")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, limits[1]))
    try:
        answer = client.post("/admin/settings", data=form)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert answer.status_code == 400 and "cannot write the settings" in answer.text
    assert ctx.config_path.read_text() == toml and KioskConfig.from_toml(ctx.config_path) == ctx.runner.config
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("kiosk")] == ["kiosk.toml"]


def test_a_settings_save_writes_a_file_that_reads_back_whatever_the_names_hold(app_store, tmp_path):
    """Names beyond the basic plane (an emoji) and a DEL are written as TOML reads them: a save must
    not turn a good file into one the kiosk cannot start from."""
    from edge_verify.kiosk import KioskConfig

    toml = '[kiosk]\nsource = "x \\u007f.avi"\nidentity = "Zoë 😀"\n'
    client, ctx, csrf = settings_client(app_store, tmp_path, toml)
    answer = client.post("/admin/settings", data=settings_form(csrf, ctx.runner.config, cooldown_s="5"))
    assert answer.status_code == 200, answer.text
    assert KioskConfig.from_toml(ctx.config_path) == ctx.runner.config
    assert ctx.runner.config.identity == "Zoë 😀" and ctx.runner.config.cooldown_s == 5.0


def test_a_password_typed_into_the_name_field_is_not_written_to_the_audit_log(app_store):
    """A failed login records the name tried only when it is an administrator's: otherwise it may be
    a password typed one field too early, and the log is read, exported and sent to the fleet."""
    client, _ = client_for(app_store)
    page = client.get("/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    answer = client.post("/login", data={"csrf": token, "name": PASSWORD, "password": ""})
    assert answer.status_code == 401
    answer = client.post("/login", data={"csrf": token, "name": "alice", "password": "wrong password"})
    rows = app_store.audit_log(command="login")
    assert [(r.claimed, r.accepted) for r in rows] == [("alice", False), (None, False)]
    assert not any(PASSWORD in str(v) for r in app_store.audit_log(1000) for v in vars(r).values())


def test_a_password_hashed_with_older_parameters_is_rehashed_at_its_next_login(app_store):
    """Otherwise a name with an older (cheaper) record answers faster than an unknown one, which
    tells a guesser which names exist, and keeps the weaker hash in the store."""
    import hashlib
    import secrets

    from edge_verify.web.security import SCRYPT

    salt = secrets.token_bytes(16)
    old = {"kdf": "scrypt", "n": 2**14, "r": 8, "p": 1, "salt": salt.hex()}
    old["hash"] = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=2**25, dklen=32).hex()
    app_store.set_admin("alice", old, source="test")
    client, _ = client_for(app_store)
    log_in(client)
    record = app_store.admin("alice")
    assert {k: record[k] for k in ("n", "r", "p")} == SCRYPT and record["salt"] != old["salt"]
    assert client.get("/admin/people").status_code == 200  # the session opened with it goes on
    client.cookies.clear()
    log_in(client)  # and the new record takes the same password


def test_a_tls_key_that_every_user_of_the_device_can_read_is_refused(tmp_path):
    """Any account on the device could then pose as the admin pages to the LAN (a group, e.g.
    Debian's ssl-cert, may read it)."""
    import argparse
    import os

    from edge_verify.web.server import _tls
    from edge_verify.web.tls import self_signed

    cert, key, _ = self_signed(tmp_path, "127.0.0.1")
    args = argparse.Namespace(listen="127.0.0.1", tls_cert=str(cert), tls_key=str(key))
    os.chmod(key, 0o640)
    assert _tls(args)[1] == key
    os.chmod(key, 0o644)
    with pytest.raises(UsageError, match=r"readable by every user of this device: chmod o-r"):
        _tls(args)
