"""Extract MediaPipe's face mesh model into edge_verify/models/face_mesh/ (no mediapipe at run time).

    python scripts/extract_face_mesh.py            # downloads the wheel with pip (registry only)
    python scripts/extract_face_mesh.py WHEEL.whl  # or use a wheel you already have

`face_landmark.tflite` (468 3-D landmarks from a 192x192 face crop, Apache-2.0) is inside the PyPI wheel
`mediapipe==0.10.14` at `mediapipe/modules/face_landmark/`; newer wheels no longer carry it. Any
0.10.14 wheel holds the same file; the sha256 below is checked.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
OUT = Path(__file__).resolve().parents[1] / "edge_verify" / "models" / "face_mesh" / "face_landmark.tflite"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            wheel = Path(sys.argv[1])
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "mediapipe==0.10.14", "-d", tmp]
            subprocess.run(cmd, check=True)
            wheel = next(Path(tmp).glob("mediapipe-0.10.14-*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit(f"{wheel}: {MEMBER} has sha256 {digest}, expected {SHA256}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data):,} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
