"""``python -m flowfed.runtime``: the tool-side engine (see :mod:`flowfed.runtime.toolside`).

Example:
    python -m flowfed.runtime --endpoint wss://platform/api/v1/tools/ws \\
        --token "$FLOWFED_TOOL_TOKEN" --tool tools.py:train --timeout 30
"""

from __future__ import annotations

import sys

from flowfed.runtime.toolside import main

if __name__ == "__main__":
    sys.exit(main())
