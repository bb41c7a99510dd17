"""`python -m minilog.cli ...`: the `minilog` command, for launchers that know only the
interpreter (`minilog cluster up` starts its brokers this way, so they run on the same Python)."""

import sys

from minilog.cli import main

sys.exit(main())
