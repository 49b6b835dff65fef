"""``python -m bridge serve …`` (same as the ``bridge`` console script)."""

from bridge.cli import main

raise SystemExit(main())
