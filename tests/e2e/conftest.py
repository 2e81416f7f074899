"""The end-to-end tests reuse the CNI root tests' node (tests/root/cni/cnienv.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "root" / "cni"))
