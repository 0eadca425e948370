"""On-site calibration that works for a small site (3-50 people).

A site can always measure its false rejects (its own people's genuine pairs) but rarely its false
accepts: FAR 1e-3 needs about 10,000 impostor tries (some 21 people with 5 photos each). So the
false-accept side comes from the bundle's measured FAR curve (never looser than what the bundle
vouches for at the requested FAR), the site's own impostor pairs can only tighten it, and the site's
genuine pairs give its FRR at each of the bundle's operating points and at the thresholds between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_verify.matcher import MAX_TEMPLATE_FRAMES
from edge_verify.metrics import threshold_at_far
from edge_verify.operating import MIN_EVENTS, resolvable, round_up, threshold_for_far, wilson_interval

PHOTOS_PER_PERSON = 5  # the example in the "how many people" line


@dataclass(frozen=True)
class Row:
    """One candidate threshold: the FAR the bundle vouches for there, and the site's FRR."""

    threshold: float
    bundle_far: float | None  # the bundle curve's FAR at this threshold (None: above or off the curve)
    points: tuple[str, ...]  # the bundle's operating points at this threshold
    frr: float
    frr_ci: tuple[float, float]
    site_far: float  # the site's impostor pairs at or above it (a rough figure: the site rarely resolves it)

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "bundle_far": self.bundle_far,
            "points": list(self.points),
            "frr": self.frr,
            "frr_ci": [round(v, 5) for v in self.frr_ci],
            "site_far": self.site_far,
        }


@dataclass(frozen=True)
class SiteCalibration:
    far: float
    threshold: float  # what the site gets: the bundle's threshold at ``far``, tightened by the site's impostors
    bundle_threshold: float | None  # None: the bundle has no FAR curve (the site must resolve the FAR itself)
    bundle_resolved: bool  # False: ``far`` is below what the bundle's data resolved (its strictest threshold)
    site_bound: float | None  # the threshold the site's impostor pairs need (None: no impostor pairs)
    site_resolves: bool  # the site's impostor pairs resolve ``far`` on their own
    tightened: bool  # the site's impostor pairs raised the threshold above the bundle's
    genuine_pairs: int
    impostor_pairs: int
    people: int
    images: int
    rows: tuple[Row, ...] = field(default=())
    chosen: Row | None = None

    @property
    def vouched(self) -> bool:
        """The bundle's curve or the site's own impostor pairs back the FAR."""
        return self.bundle_threshold is not None or self.site_resolves

    @property
    def pairs_needed(self) -> int:
        """Impostor pairs a site needs to measure ``far`` itself."""
        return math.ceil(MIN_EVENTS / self.far)

    def as_dict(self) -> dict:
        return {
            "far": self.far,
            "threshold": self.threshold,
            "bundle_threshold": self.bundle_threshold,
            "bundle_resolved": self.bundle_resolved,
            "site_bound": self.site_bound,
            "site_resolves_far": self.site_resolves,
            "tightened_by_site": self.tightened,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "people": self.people,
            "images": self.images,
            "impostor_pairs_needed": self.pairs_needed,
            "people_needed": people_needed(self.far),
            "table": [r.as_dict() for r in self.rows],
            "at_threshold": self.chosen.as_dict() if self.chosen else None,
        }


def stamp(bundle, record: dict) -> dict:
    """A site calibration record tied to the bundle's decision fields (thresholds, curve): one made
    with another version of the bundle (another statistic, other points) is stale."""
    return {**record, "decision_digest": bundle.decision_digest(), "bundle_version": bundle.version}


def is_current(bundle, record: dict) -> bool:
    """The record was made with this bundle's decision fields (records from before they were
    stamped were made with an older bundle)."""
    return record.get("decision_digest") == bundle.decision_digest()


def people_needed(far: float, photos: int = PHOTOS_PER_PERSON) -> int:
    """People with ``photos`` photos each whose impostor tries (each template of all but one of a
    person's photos, up to 5, against every photo of the others) number at least MIN_EVENTS / far."""
    e = min(MAX_TEMPLATE_FRAMES, photos - 1)
    per_pair = math.comb(photos, e) * photos  # tries per ordered pair of people
    need = -(-math.ceil(MIN_EVENTS / far) // per_pair)  # n (n - 1) must reach this
    n = max(2, (1 + math.isqrt(4 * need)) // 2)  # solved, not counted up (a tiny FAR needs ~10^150)
    while n * (n - 1) < need:
        n += 1
    while n > 2 and (n - 1) * (n - 2) >= need:
        n -= 1
    return n


def bundle_far_at(curve, threshold: float) -> float | None:
    """The FAR the bundle vouches for at ``threshold`` (at most this): that of the strictest curve
    entry every data set resolved at or below it (None when the threshold is below the whole curve)."""
    below = [float(p[0]) for p in curve if float(p[1]) <= threshold + 1e-12 and (len(p) < 3 or p[2])]
    return min(below) if below else None


def row(threshold: float, genuine: np.ndarray, impostor: np.ndarray, curve, points: dict[str, float]) -> Row:
    fr = int(np.sum(genuine < threshold))
    return Row(
        threshold,
        bundle_far_at(curve, threshold),
        tuple(name for name, t in points.items() if abs(t - threshold) < 1e-9),
        fr / max(len(genuine), 1),
        wilson_interval(fr, len(genuine)),
        float(np.mean(impostor >= threshold)) if len(impostor) else 0.0,
    )


def calibrate_site(
    bundle, genuine: np.ndarray, impostor: np.ndarray, far: float, people: int = 0, images: int = 0
) -> SiteCalibration:
    """The site's threshold at ``far`` and its FRR at every candidate threshold (see the module)."""
    curve = bundle.far_curve
    points = {name: p.threshold for name, p in bundle.operating_points.items()}
    bundle_threshold, bundle_resolved = threshold_for_far(curve, far) if curve else (None, False)
    site_bound = None
    if len(impostor):
        site_bound = round_up(threshold_at_far(impostor, far))  # few pairs: above every one of them
    site_resolves = resolvable(len(impostor), far)
    if bundle_threshold is not None:
        threshold = max(bundle_threshold, site_bound or 0.0)
    elif site_resolves and site_bound is not None:  # a bundle without a curve: the site measures its FAR
        threshold = site_bound
    else:  # neither can vouch for the FAR: shown (dry run), never stored (``vouched`` is False)
        threshold = max(site_bound or 0.0, bundle.operating_point().threshold)
    tightened = bundle_threshold is not None and threshold > bundle_threshold
    grid = sorted({*(float(p[1]) for p in curve), *points.values(), threshold})
    rows = tuple(row(t, genuine, impostor, curve, points) for t in grid)
    chosen = next(r for r in rows if r.threshold == threshold)
    return SiteCalibration(
        far,
        threshold,
        bundle_threshold,
        bundle_resolved,
        site_bound,
        site_resolves,
        tightened,
        len(genuine),
        len(impostor),
        people,
        images,
        rows,
        chosen,
    )


def data_line(cal: SiteCalibration) -> str:
    """One line: how many people and photos the FAR needs, and where its false-accept side comes from."""
    have = f"{cal.impostor_pairs} impostor tries" + (
        f" ({cal.people} people, {cal.images} photos)" if cal.people else ""
    )
    if cal.site_resolves:
        return f"FAR {cal.far:g}: your {have} resolve it on their own (it needs {cal.pairs_needed:,})"
    source = (
        "the bundle's measured FAR curve, and your impostor tries can only tighten it"
        if cal.bundle_threshold is not None
        else "nothing: this bundle has no FAR curve, so the threshold is its default point's"
    )
    return (
        f"FAR {cal.far:g} measured on this site alone needs {cal.pairs_needed:,} impostor tries "
        f"(e.g. {people_needed(cal.far)} people with {PHOTOS_PER_PERSON} photos each); you have {have}: "
        f"the false-accept side comes from {source}"
    )


def meaning_line(cal: SiteCalibration) -> str:
    """One line: what the threshold means for the site's door."""
    r = cal.chosen
    assert r is not None
    vouched = f"FAR {r.bundle_far:g} as measured by the bundle" if r.bundle_far is not None else "a FAR not measured"
    return (
        f"at {cal.threshold:.4f} ({vouched}) your people are turned away on {r.frr:.1%} of single-photo tries "
        f"(95% CI {r.frr_ci[0]:.1%}-{r.frr_ci[1]:.1%}, {cal.genuine_pairs} tries); "
        "a decision on 3 frames turns fewer away"
    )
