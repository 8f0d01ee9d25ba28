"""`python -m SoftSpinalCordSegTraining ...` is the training command (see train.py)."""

from .train import main

raise SystemExit(main())
