"""`python -m instructune …` and `accelerate launch -m instructune …` enter here."""

import sys

from instructune.cli.main import main

sys.exit(main())
