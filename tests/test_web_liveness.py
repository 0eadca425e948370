"""The kiosk display through a whole liveness check, in Debian's chromium: a real person's video as the
camera (played at its own speed), the kiosk loop and the web app in one process as `serve` runs them,
and the test hook that shows each prompt just before the person makes the matching movement (the
cooperative user of tests/liveness_replay.py). The page must show the prompts, then the welcome."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from edge_verify import pipeline
from edge_verify.detect import FaceDetector
from edge_verify.landmarks import FaceMesh
from tests.fleet_servers import free_port
from tests.liveness_replay import cooperative_check, followable, video_samples
from tests.test_kiosk_liveness import ping_pong
from tests.test_web import CHROMIUM, sync_api

pytest.importorskip("uvicorn", reason="the web extra is absent: pip install 'edge-verify[web]'")


@pytest.mark.shared_data
@pytest.mark.slow
def test_display_shows_the_prompts_then_the_welcome(tmp_path, shared_data, verifier, store_path, pins, monkeypatch):
    import uvicorn

    from edge_verify.cli import build_parser
    from edge_verify.cli.common import open_store
    from edge_verify.kiosk import KioskConfig
    from edge_verify.matcher import mean_template
    from edge_verify.sources import open_source
    from edge_verify.web.app import create_app
    from edge_verify.web.context import WebContext
    from edge_verify.web.preview import FrameHub
    from edge_verify.web.runner import KioskRunner

    source = shared_data / "video/liveness/woman_headturns_wink_expressions.mp4"
    with open_source(str(source)) as frames_in:
        frames = [f.image for f in frames_in]
    events = followable(video_samples(source, FaceDetector(), FaceMesh()))
    monkeypatch.setattr(pipeline, "make_check", lambda *args, **kwargs: cooperative_check(events))
    video = tmp_path / "camera.avi"
    ping_pong(frames, video, 30.0)  # she stays in view for twice the clip: the model watches at least 10 s
    args = build_parser().parse_args(["serve", "--store", str(store_path)])
    port = free_port()
    screens = Path(os.environ.get("EDGE_VERIFY_ARTEFACTS", tmp_path)) / "web"
    screens.mkdir(parents=True, exist_ok=True)
    with open_store(args, verifier.bundle, create=True) as kiosk_store, open_store(args) as web_store:
        enrolment = [verifier.observe_single(f, "enrol").embedding for f in frames[:5]]
        kiosk_store.put("woman", mean_template(enrolment), verifier.bundle.fingerprint, 5)
        config = KioskConfig(source=str(video), identity="woman", relay_pin=17, relay_pulse_s=0.05)
        hub = FrameHub(max_fps=8)
        runner = KioskRunner(config, verifier, kiosk_store, hub)
        app = create_app(WebContext(args, web_store, hub, runner))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        web = threading.Thread(target=server.run, daemon=True)
        web.start()
        while not server.started:
            time.sleep(0.05)
        shown: list[tuple[str, str]] = []
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 800, "height": 480})  # a 7" kiosk screen
                page.goto(f"http://127.0.0.1:{port}/")
                runner.start()
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    seen = (page.text_content("#prompt") or "", page.text_content("#outcome") or "")
                    if not shown or seen != shown[-1]:
                        shown.append(seen)
                        if seen[0].startswith(("Turn", "Blink")) and len(shown) < 12:
                            page.screenshot(path=str(screens / f"display-prompt-{len(shown):02d}.png"))
                    if seen[1].startswith("Welcome"):
                        page.screenshot(path=str(screens / "display-welcome.png"))
                        break
                    time.sleep(0.1)
                browser.close()
        finally:
            server.should_exit = True
            runner.stop()
            web.join(10)
    prompts = [prompt for prompt, _ in shown if prompt.startswith(("Turn your head", "Blink"))]
    outcomes = [outcome for _, outcome in shown if outcome]
    assert outcomes and outcomes[0] == "Welcome woman", shown
    assert len(set(prompts)) >= 2, shown  # the prompts of the challenge were on screen before the welcome
    first_welcome = next(i for i, (_, outcome) in enumerate(shown) if outcome)
    assert any(p.startswith(("Turn your head", "Blink")) for p, _ in shown[:first_welcome]), shown
    assert [s.state for s in pins.pin(17).states][:3] == [False, True, False]  # the door opened
