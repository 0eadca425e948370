"""A photo puppet shown to the camera on a phone or monitor never passes the liveness check (issue 24).

The attack (``tests/puppet_attacks.py``): one photo of an enrolled person that enrolment did not use,
warped in 3-D along the face mesh to answer each prompt as the check shows it (closed loop: it reads
the prompt, reacts after a human delay, turns or blinks, comes back to rest), on a simulated screen
filmed by the kiosk camera. Seeded random challenges, the anti-spoofing model on, as at a door.

``benchmarks/puppet_attack.py --modes screen --n 100`` runs 100 challenges per person; this test runs
``CHALLENGES`` of them per person in CI. A puppet injected into the feed instead of filmed is not
stopped by these cues (docs/liveness.md says so and what is done about the camera's path)."""

from __future__ import annotations

import random
from collections import Counter

import cv2
import numpy as np
import pytest

from edge_verify.antispoof import AntiSpoof
from edge_verify.detect import FaceDetector
from edge_verify.landmarks import FaceMesh
from edge_verify.sources import list_images
from tests.puppet_attacks import Puppet, PuppetActor, challenge_monitor, drive

CHALLENGES = 10  # per person; seeded, so a run is repeatable
MODEL = "anti-spoofing model"  # how a failure the model decided begins


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_photo_puppet_on_a_screen_never_passes_the_challenge(shared_data):
    cv2.setNumThreads(1)
    detector, mesh, antispoof = FaceDetector(), FaceMesh(), AntiSpoof()
    passed, challenge_alone, reasons, people = Counter(), Counter(), Counter(), 0
    for person in sorted(d for d in (shared_data / "faces").iterdir() if d.is_dir()):
        photos = list_images(person)
        if len(photos) < 2:
            continue
        people += 1
        puppet = Puppet(cv2.imread(str(photos[1])), detector, mesh)  # photos[0] is the one enrolment takes
        for seed in range(CHALLENGES):
            actor = PuppetActor(puppet, np.random.default_rng(seed), screen=True)
            result = drive(actor, challenge_monitor(mesh, random.Random(seed), antispoof), detector)
            passed[person.name] += result.state == "passed"
            challenge_alone[person.name] += result.state == "passed" or result.reason.startswith(MODEL)
            if result.state != "passed":
                reasons[result.reason.split(" (")[0]] += 1
    assert people >= 3, "the shared faces hold fewer than 3 people with two photos"
    assert sum(passed.values()) == 0, f"puppet passes per person: {dict(passed)}; failures: {dict(reasons)}"
    # the attack is real: without the model's verdict the challenge alone would have let some through
    assert sum(challenge_alone.values()) > 0, f"the puppet never answered a challenge: {dict(reasons)}"


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_screen_puppet_the_model_lets_through_is_stopped_by_the_screen_border(shared_data):
    """A challenge (the first of ``benchmarks/puppet_attack.py``'s 100 for this person that got through
    before the border cue) in which the puppet on a simulated monitor answered every prompt and the
    anti-spoofing model scored it as live (mean P(real) 0.46, threshold 0.41): the monitor's border
    around the face stops it."""
    seed = 1023
    cv2.setNumThreads(1)
    detector, mesh = FaceDetector(), FaceMesh()
    photo = list_images(shared_data / "faces" / "kit_harington")[1]
    actor = PuppetActor(Puppet(cv2.imread(str(photo)), detector, mesh), np.random.default_rng(seed), screen=True)
    result = drive(actor, challenge_monitor(mesh, random.Random(seed), AntiSpoof()), detector)
    assert result.state == "failed" and result.reason.startswith("a straight frame around the face"), result.reason
    assert result.real is not None and result.real >= AntiSpoof().threshold  # the model alone was fooled
