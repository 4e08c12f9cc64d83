"""``python -m dsmooth_core``: the command-line tools, the same program as the ``dsmooth`` console command."""

from dsmooth_core.cli import main

raise SystemExit(main())
