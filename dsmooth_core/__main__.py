"""``python -m dsmooth_core``: the command-line tools."""

from dsmooth_core.cli import main

raise SystemExit(main())
