"""1:N matching against large galleries: time per probe for 10^3, 10^4 and 10^5 templates.

    python benchmarks/identify_scale.py

Synthetic 128-D templates (random unit vectors; 1:N accuracy is not measured here). Three ways, in
the same run: a Python loop scoring one template at a time (the baseline a non-vectorised matcher
has), one float64 matrix product with a full sort (`Gallery.rank`), and what `identify` does (one
float32 product, the best few picked, re-scored exactly in float64).
Loading the gallery (decrypting templates) is not timed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_verify.matcher import Gallery, identify, score, unit  # noqa: E402

PROBES = 50


def timed(fn, probes) -> float:
    fn(probes[0])  # warm
    start = time.perf_counter()
    for p in probes:
        fn(p)
    return 1000 * (time.perf_counter() - start) / len(probes)


def main() -> None:
    rng = np.random.default_rng(0)
    print(
        f"{'templates':>10} {'python loop':>12} {'float64+sort':>12} {'identify':>10}  (ms per probe, {PROBES} probes)"
    )
    for n in (1_000, 10_000, 100_000):
        templates = unit(rng.normal(size=(n, 128))).astype(np.float32)
        gallery = Gallery({f"id{i}": t for i, t in enumerate(templates)})
        probes = [unit(rng.normal(size=(3, 128))) for _ in range(PROBES)]
        items = list(zip(gallery.names, templates, strict=True))

        step = max(1, n // 2000)

        def loop(p, items=items[::step]):
            return max((score(p, t), name) for name, t in items)

        loop_ms = timed(loop, probes[:5]) * step  # scored on a 1-in-step sample, scaled up
        sort_ms = timed(lambda p, g=gallery: g.rank(p), probes)  # every exact score, fully sorted
        fast_ms = timed(lambda p, g=gallery: identify(p, g, 0.95, 0.02), probes)
        print(
            f"{n:>10} {loop_ms:>12.2f} {sort_ms:>12.2f} {fast_ms:>10.2f}   identify: {loop_ms / fast_ms:.0f}x "
            f"the loop's speed, {sort_ms / fast_ms:.1f}x a float64 product with a full sort"
        )


if __name__ == "__main__":
    main()
