"""The end-to-end tests reuse the CNI root tests' node (tests/root/cni/cnienv.py) and share one image build
per session (imagebuild.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "root" / "cni"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagebuild import image_archive, next_image_archive  # noqa: F401  (pytest fixtures)
