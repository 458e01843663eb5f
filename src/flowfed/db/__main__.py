"""``python -m flowfed.db --write-sqlite-ddl``: regenerate ``schema_sqlite.sql`` and its template.

A package entry point rather than ``python -m flowfed.db.schema``: importing the package
already imports ``flowfed.db.schema``, and runpy warns about running a loaded module.
"""

import sys

from flowfed.db.sqlite_ddl import main

sys.exit(main())
