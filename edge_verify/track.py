"""Follow each face across frames, so that decisions are made on one person's frames.

A face joins the track whose last box it overlaps most (IoU) if its embedding agrees with the
track's recent frames (mean cosine >= ``continuity``); a face that overlaps a track but does not
agree cuts it (another person stepped in) and starts a new one. Image folders have no motion:
there ``use_boxes=False`` and embedding agreement alone links a photo to the current track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_verify.matcher import unit

DECISION_WINDOW = 10  # a re-decision averages up to this many times k of the track's latest frames


@dataclass(eq=False)
class Track:
    id: int
    box: tuple[float, float, float, float] | None
    last_frame: int
    embeddings: list[np.ndarray] = field(default_factory=list)
    frame_names: list[str] = field(default_factory=list)
    decided_at: int = 0  # number of embeddings when the last decision was taken
    start: int = 0  # decisions use embeddings from here on (after a liveness check passed)
    ended: bool = False

    def recent(self, k: int) -> np.ndarray:
        return np.stack(self.embeddings[-k:])

    def new_frames(self) -> int:
        """Embeddings gathered since the last decision."""
        return len(self.embeddings) - self.decided_at

    def take(self, k: int) -> np.ndarray:
        """The frames a decision averages, and mark the track decided: the first decision uses its
        ``k`` frames; later ones the whole track up to ``DECISION_WINDOW * k`` frames, so a stranger
        who stays in view does not get a fresh chance every ``k`` frames."""
        self.decided_at = len(self.embeddings)
        usable = len(self.embeddings) - self.start
        return self.recent(min(usable, DECISION_WINDOW * k))


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    def __init__(self, continuity: float, min_iou: float = 0.3, max_gap: int = 5, use_boxes: bool = True):
        self.continuity = continuity
        self.min_iou = min_iou
        self.max_gap = max_gap
        self.use_boxes = use_boxes
        self.tracks: list[Track] = []
        self.cuts = 0
        self._next_id = 1
        self.assigned: list[Track | None] = []  # the last update's track for each face (None: not kept)

    def _agrees(self, track: Track, embedding: np.ndarray) -> bool:
        if not track.embeddings:
            return True
        return float((unit(track.recent(5)) @ unit(embedding)[0]).mean()) >= self.continuity

    def _new(self, frame: int, box, embedding, name: str) -> Track:
        track = Track(self._next_id, box, frame)
        self._next_id += 1
        self._add(track, frame, box, embedding, name)
        self.tracks.append(track)
        return track

    @staticmethod
    def _add(track: Track, frame: int, box, embedding, name: str) -> None:
        track.box, track.last_frame = box, frame
        if embedding is not None:
            track.embeddings.append(np.asarray(embedding, np.float32))
            track.frame_names.append(name)

    def update(self, frame: int, faces: list[tuple[tuple | None, np.ndarray | None]], name: str = "") -> list[Track]:
        """Assign this frame's faces (box, embedding or None when the quality gate refused it);
        returns the live tracks that gained an embedding on this frame."""
        for t in self.tracks:
            if not t.ended and frame - t.last_frame > self.max_gap:
                t.ended = True
        live = [t for t in self.tracks if not t.ended]
        updated: list[Track] = []
        taken: set[int] = set()
        self.assigned = []
        for box, embedding in faces:
            track = self._match(live, taken, box)
            if track is not None and embedding is not None and not self._agrees(track, embedding):
                track.ended = True  # the face in this place is someone else now
                self.cuts += 1
                track = None
            if track is None:
                if embedding is None:
                    self.assigned.append(None)
                    continue
                track = self._new(frame, box, embedding, name)
            else:
                self._add(track, frame, box, embedding, name)
            taken.add(track.id)
            self.assigned.append(track)
            if embedding is not None:
                updated.append(track)
        self.tracks = [t for t in self.tracks if not t.ended]
        return updated

    def end_all(self) -> None:
        """A new scene (the next of several unrelated photos): no track continues into it."""
        for t in self.tracks:
            t.ended = True
        self.tracks = []

    def _match(self, live: list[Track], taken: set[int], box) -> Track | None:
        candidates = [t for t in live if t.id not in taken]
        if not self.use_boxes or box is None:
            return candidates[-1] if candidates else None
        best, best_iou = None, self.min_iou
        for t in candidates:
            if t.box is not None and (overlap := iou(t.box, box)) >= best_iou:
                best, best_iou = t, overlap
        return best
