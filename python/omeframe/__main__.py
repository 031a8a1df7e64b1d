"""``python -m omeframe``: the command line."""

from omeframe.cli import main

raise SystemExit(main())
