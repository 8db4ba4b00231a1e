"""`python -m latentserve_client`: the same as the `latentserve` command."""

import sys

from latentserve_client.cli import main

sys.exit(main())
