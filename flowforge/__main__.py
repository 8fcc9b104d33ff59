"""``python -m flowforge``: the same as the ``flowforge`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
