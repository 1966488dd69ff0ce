"""`python -m cnnlab` runs the command-line interface."""

import sys

from cnnlab.cli import main

sys.exit(main())
