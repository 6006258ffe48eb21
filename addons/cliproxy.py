"""cliproxy for mitmproxy's own tools: `mitmdump -s addons/cliproxy.py` or `mitmweb -s ...`.

mitmproxy puts this file's directory (addons/) on sys.path, not the repository root, so the
root is added here and the packages are imported as `addons.*`, `config.*`, `pool.*`, ...
(this file is named like the project, so no package may be called `cliproxy`).

At import time the listening mode is switched to reverse mode on the config's host and port
(see addons/listen.py), before mitmproxy binds its default open proxy.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addons.chain import build_addons  # noqa: E402
from addons.listen import ensure_reverse_mode  # noqa: E402

ensure_reverse_mode()

addons = build_addons()
