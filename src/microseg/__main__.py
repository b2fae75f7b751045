"""`python -m microseg` runs the same CLI as the `microseg` console script."""

import microseg.cli.main

microseg.cli.main.run()
