"""The kiosk loop's frames/s and memory with the web app serving the display's preview, against the
loop alone, in one run. Each mode runs in its own process (so its peak RSS is its own):

    kiosk         the kiosk loop alone (as `edge-verify kiosk`)
    web-idle      the loop inside `edge-verify serve`'s app, nobody watching
    web-display   ... one client polling like the display page (a preview 125 ms after the last, status every 400 ms)
    web-greedy    ... one client fetching the preview back to back (the encoder's rate cap is all that limits it)

    python benchmarks/web_preview.py [--source VIDEO] [--frames 400] [--repeat 2]

The source is ../shared/data/video/short_hamilton_clip.mp4 when present (several faces), else a video of
the packaged sample face; it is read as fast as the loop takes frames (no pacing), with the kiosk's
defaults (challenge liveness, 1:N against one enrolled person). The client is a separate process,
as a browser is. Figures: frames/s (best of --repeat runs per mode), ratio to `kiosk`, peak RSS, JPEGs made.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("kiosk", "web-idle", "web-display", "web-greedy")
CLIENT = """
import sys, time, httpx
url, greedy = sys.argv[1], sys.argv[2] == "1"
with httpx.Client(timeout=10) as c:
    last = 0.0
    while True:
        try:
            c.get(url + "/display/preview.jpg")
            if time.monotonic() - last > 0.4:
                c.get(url + "/display/status"); last = time.monotonic()
        except httpx.HTTPError:
            time.sleep(0.1)
        if not greedy:
            time.sleep(0.125)
"""


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(mode: str, source: str, frames: int, store_path: str) -> dict:
    """One mode in this process: the frames/s of ``frames`` loop frames, peak RSS, JPEGs encoded."""
    from edge_verify.kiosk import Kiosk, KioskConfig
    from edge_verify.pipeline import Verifier
    from edge_verify.store import TemplateStore

    verifier = Verifier()
    config = KioskConfig(source=source, max_frames=frames, reconnect_s=0.0)
    store = TemplateStore(store_path, create=False)
    hub = client = server = None
    if mode == "kiosk":
        kiosk = Kiosk(config, verifier, store, [])
        kiosk.process(*_first_frame(source))  # warm the interpreters as the web modes are warmed
        kiosk.frames = 0
        start = time.perf_counter()
        kiosk.run(threading.Event())
        elapsed, done = time.perf_counter() - start, kiosk.frames
    else:
        import argparse as ap

        import uvicorn

        from edge_verify.web.app import create_app
        from edge_verify.web.context import WebContext
        from edge_verify.web.preview import FrameHub
        from edge_verify.web.runner import KioskRunner

        hub = FrameHub()
        runner = KioskRunner(config, verifier, store, hub, pace_files=False)
        runner.kiosk = runner._build(config)
        runner.kiosk.process(*_first_frame(source))
        runner.kiosk.frames = 0
        web_store = TemplateStore(store_path, create=False)
        ctx = WebContext(ap.Namespace(store=store_path, key_file=None), web_store, hub, runner)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(ctx), port=port, log_level="warning", access_log=False))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        if mode != "web-idle":
            client = subprocess.Popen(
                [sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}", "1" if mode == "web-greedy" else "0"]
            )
            time.sleep(1.0)  # the client is up and fetching before the loop starts
        start = time.perf_counter()
        runner._thread = threading.Thread(target=runner._run)
        runner._thread.start()
        runner._thread.join()
        elapsed, done = time.perf_counter() - start, runner.kiosk.frames
        if client is not None:
            client.terminate()
            client.wait()
        server.should_exit = True
    return {
        "mode": mode,
        "frames": done,
        "seconds": elapsed,
        "fps": done / elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "jpegs": hub.encoded if hub else 0,
    }


def _first_frame(source: str):
    from edge_verify.sources import open_source

    with open_source(source) as frames:
        frame = next(iter(frames))
    return frame.image, frame.name


def sample_video(folder: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_video

    path = folder / "sample.avi"
    make_video(path, [("astronaut_check.jpg", 60), (None, 10)])
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="video standing in for the camera")
    parser.add_argument("--frames", type=int, default=400, help="loop frames per run (default 400)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best counts (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.source, args.frames, args.store)))
        return

    from importlib import resources

    from edge_verify.pipeline import Verifier
    from edge_verify.store import TemplateStore

    with tempfile.TemporaryDirectory() as tmp:
        hamilton = ROOT.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
        source = args.source or (str(hamilton) if hamilton.is_file() else sample_video(Path(tmp)))
        store_path = str(Path(tmp) / "bench.db")
        verifier = Verifier()
        samples = Path(str(resources.files("edge_verify") / "samples"))
        with TemplateStore(store_path) as store:
            store.put(
                "astronaut", verifier.embed_image(samples / "astronaut_enroll.jpg"), verifier.bundle.fingerprint, 1
            )
        print(f"source {source}, {args.frames} loop frames per run, best of {args.repeat}; {os.cpu_count()} CPUs")
        results: dict[str, dict] = {}
        for _ in range(args.repeat):
            for mode in MODES:  # interleaved, so a slow moment of a shared machine hits every mode alike
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--source",
                        source,
                        "--frames",
                        str(args.frames),
                        "--store",
                        store_path,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                if mode not in results or result["fps"] > results[mode]["fps"]:
                    results[mode] = result
        base = results["kiosk"]
        print(f"{'mode':<12} {'frames/s':>9} {'ratio':>6} {'peak RSS MB':>12} {'+MB':>6} {'JPEGs':>6}")
        for mode in MODES:
            r = results[mode]
            print(
                f"{mode:<12} {r['fps']:9.1f} {r['fps'] / base['fps']:6.2f} {r['peak_rss_mb']:12.0f} "
                f"{r['peak_rss_mb'] - base['peak_rss_mb']:6.0f} {r['jpegs']:6d}"
            )
        worst = min(results[m]["fps"] for m in MODES[1:]) / base["fps"]
        print(f"slowest web mode keeps {worst:.0%} of the loop's frame rate (the bar: more than 50%)")


if __name__ == "__main__":
    main()
