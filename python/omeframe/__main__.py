"""``python -m omeframe``: the command line."""

from .cli import main

raise SystemExit(main())
