"""`python -m taskmaster` runs the command line."""

from taskmaster.cli import main

raise SystemExit(main())
