"""The kiosk loop in a thread of the web server's process: the one reader of the camera. Its
frames go to a FrameHub (preview, live enrolment); a settings change restarts it with the new
configuration (like the kiosk's SIGHUP reload)."""

from __future__ import annotations

import logging
import os
import threading
import time

from edge_verify.errors import EdgeVerifyError

log = logging.getLogger("edge_verify.web")


class KioskRunner:
    def __init__(self, config, verifier, store, hub, pace_files: bool = True, on_decision=None):
        """``store``: the loop's own TemplateStore (its own connection); ``pace_files``: a video file
        standing in for a camera plays at its own frame rate instead of as fast as it decodes;
        ``on_decision``: told of each audited decision or alert (the command prints a line)."""
        self.config = config
        self.verifier = verifier
        self.store = store
        self.hub = hub
        self.pace_files = pace_files
        self.on_decision = on_decision
        self.kiosk = None
        self.error: str | None = None
        self._stop, self._reload = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._pace: tuple[float, float] | None = None
        self._paced = False  # whether the running kiosk reads a video file to pace (set per build)

    def start(self) -> None:
        """Build the first kiosk here (a bad configuration fails the command), then run it in a thread."""
        self.kiosk = self._build(self.config)
        self._thread = threading.Thread(target=self._run, name="kiosk", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def restart(self, config) -> None:
        """Run the loop again with ``config`` (already validated)."""
        self.config = config
        self._reload.set()
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _build(self, config):
        from edge_verify.kiosk import Kiosk, build_actions

        actions = build_actions(config)
        try:
            kiosk = Kiosk(config, self.verifier, self.store, actions, require_enrolled=False)
        except BaseException:
            for action in actions:
                action.close()
            raise
        kiosk.on_frame = lambda frame: self._on_frame(kiosk, frame)
        kiosk.on_decision = self.on_decision
        self._pace = None
        self._paced = self.pace_files and os.path.isfile(config.source)
        return kiosk

    def _run(self) -> None:
        while True:
            try:
                self.kiosk.run(self._stop)
            except EdgeVerifyError as exc:
                self.error = str(exc)
                log.error("kiosk stopped: %s", exc)
            except Exception as exc:  # the web app stays up to show (and fix) what stopped the door
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("kiosk stopped")
            if not self._reload.is_set():
                return
            self._reload.clear()
            self._stop.clear()
            try:
                self.kiosk, self.error = self._build(self.config), None
                log.warning("kiosk restarted with the new settings")
            except EdgeVerifyError as exc:
                self.error = str(exc)
                return

    def _on_frame(self, kiosk, frame) -> None:
        boxes = [t.box for t in kiosk.tracks.tracker.tracks if not t.ended and t.box is not None]
        state = kiosk.status.get("state")
        colour = (80, 200, 80) if state == "ACCEPTED" else (60, 60, 220) if state == "REJECTED" else (255, 255, 255)
        self.hub.put(frame.image, boxes, colour)
        if self._paced:
            now = time.monotonic()
            if self._pace is None or frame.time < self._pace[1]:
                self._pace = (now - frame.time, frame.time)
            else:
                self._pace = (self._pace[0], frame.time)
                ahead = self._pace[0] + frame.time - now
                if ahead > 0:
                    self._stop.wait(min(ahead, 1.0))
