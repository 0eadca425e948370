"""The fleet's sync, measured against a real PostgreSQL 15 started here (tests/fleet_servers.py):

1. the authority publishes 10^4 templates to a group (signed, sealed to itself);
2. a new kiosk is added (every template sealed to its key) and syncs them into an empty local
   store: time, and the sync process's peak memory above what it holds before the pull; the
   baseline is the same 10^4 templates written by one local ``TemplateStore`` transaction;
3. a removal's latency: N kiosks run their sync loops (LISTEN/NOTIFY), one identity is removed at
   the centre, and the time until each kiosk's store has applied it is measured (N = 1 and N).

    python benchmarks/fleet_sync.py [--templates 10000] [--kiosks 10] [--removals 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_verify.bundle import load_bundle  # noqa: E402
from edge_verify.fleet.centre import Centre  # noqa: E402
from edge_verify.fleet.crypto import Authority  # noqa: E402
from edge_verify.fleet.sync import KioskSync  # noqa: E402
from edge_verify.store import TemplateStore  # noqa: E402
from tests.fleet_servers import Postgres, postgres_missing  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from edge_verify.fleet.sync import KioskFile, KioskSync

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

sync = KioskSync(KioskFile.load(sys.argv[2]), sys.argv[3], create=True)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the memory held now
before = status("VmRSS")
start = time.perf_counter()
result = sync.sync_once()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "templates": len(sync.store.list()), "rss_before_kib": before,
                  "peak_kib": status("VmHWM"), "refused": len(result.refused)}))
sync.close()
"""


def vectors(count: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((count, size)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def removal_latency(centre, authority, root: Path, kiosks: int, removals: int, fingerprint: str, size: int):
    """Seconds from ``fleet remove`` to each of ``kiosks`` running kiosks having applied it."""
    group = f"lat{kiosks}"
    names = [f"r{kiosks}-{i}" for i in range(removals)]
    centre.publish(
        authority, group, [(n, v, fingerprint, 1) for n, v in zip(names, vectors(removals, size, 1), strict=True)]
    )
    syncs, stop, threads = [], threading.Event(), []
    for i in range(kiosks):
        file = centre.add_kiosk(authority, f"{group}-k{i}", group, interval_s=30)
        sync = KioskSync(file, root / f"{group}-{i}.db", create=True)
        sync.sync_once()
        syncs.append(sync)
        threads.append(threading.Thread(target=sync.run, args=(stop,), daemon=True))
        threads[-1].start()
    time.sleep(0.5)  # every loop is waiting on its notification
    latencies = []
    for name in names:
        start = time.perf_counter()
        revision = centre.remove(authority, group, name)
        pending = set(range(kiosks))
        while pending:
            for i in list(pending):
                if syncs[i].store.fleet_applied() >= revision:
                    latencies.append(time.perf_counter() - start)
                    pending.discard(i)
            time.sleep(0.002)
    stop.set()
    for thread in threads:
        thread.join(10)
    for sync in syncs:
        sync.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--kiosks", type=int, default=10)
    parser.add_argument("--removals", type=int, default=5)
    args = parser.parse_args()
    reason = postgres_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0
    bundle = load_bundle()
    size, fingerprint = bundle.embedding_size, bundle.fingerprint
    server = Postgres.start_new()
    root = Path(tempfile.mkdtemp(prefix="ev-fleet-bench-"))
    try:
        authority = Authority.generate()
        centre = Centre(server.dsn)
        centre.init(authority)
        data = vectors(args.templates, size)
        names = [f"person-{i:05d}" for i in range(args.templates)]

        start = time.perf_counter()
        centre.publish(authority, "bench", [(n, v, fingerprint, 3) for n, v in zip(names, data, strict=True)])
        publish_s = time.perf_counter() - start
        start = time.perf_counter()
        file = centre.add_kiosk(authority, "new-kiosk", "bench")
        add_s = time.perf_counter() - start
        file.save(root / "new-kiosk.toml")

        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(ROOT), str(root / "new-kiosk.toml"), str(root / "new-kiosk.db")],
            capture_output=True,
            text=True,
            check=True,
        )
        synced = json.loads(child.stdout.strip().splitlines()[-1])
        assert synced["templates"] == args.templates and synced["refused"] == 0, synced

        with TemplateStore(root / "baseline.db") as store:
            start = time.perf_counter()
            store.apply_fleet([(n, v, fingerprint, 3) for n, v in zip(names, data, strict=True)], [], 1, "baseline")
            local_s = time.perf_counter() - start

        one = removal_latency(centre, authority, root, 1, args.removals, fingerprint, size)
        many = removal_latency(centre, authority, root, args.kiosks, args.removals, fingerprint, size)
        centre.close()
    finally:
        server.destroy()

    n = args.templates
    print(f"fleet sync, PostgreSQL 15 on this machine, {n} templates of {size} float32 values ({bundle.name})")
    print(f"  authority publishes {n} (sign + seal):        {publish_s:7.2f} s  ({n / publish_s:,.0f}/s)")
    print(f"  add-kiosk seals {n} to the new kiosk:          {add_s:7.2f} s  ({n / add_s:,.0f}/s)")
    rate = n / synced["seconds"]
    print(f"  new kiosk's first sync (pull, verify, open,   {synced['seconds']:7.2f} s  ({rate:,.0f}/s)")
    print(f"    re-encrypt, one local transaction)          x{synced['seconds'] / local_s:.1f} the baseline")
    print(f"  baseline: the same {n} written locally in one transaction: {local_s:.2f} s")
    extra = (synced["peak_kib"] - synced["rss_before_kib"]) / 1024
    print(f"  sync process peak memory: {synced['peak_kib'] / 1024:.0f} MiB ({extra:+.0f} MiB for the pull)")
    for label, lat in (("1 kiosk", one), (f"{args.kiosks} kiosks", many)):
        print(
            f"  removal applied by {label:>10}: median {statistics.median(lat) * 1000:6.0f} ms, "
            f"max {max(lat) * 1000:6.0f} ms over {args.removals} removals"
        )
    print(f"  ratio of the max latency, {args.kiosks} kiosks / 1 kiosk: x{max(many) / max(one):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
