"""`python -m SoftSpinalCordSegLib` runs the `softseg` command line."""

from .cli import main

raise SystemExit(main())
