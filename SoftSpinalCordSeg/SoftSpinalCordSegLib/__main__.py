"""`python -m SoftSpinalCordSegLib` runs the `softseg` command line."""

from .cli import run

run()
