"""`python -m microseg` runs the same CLI as the `microseg` console script."""

from microseg.cli import main

main.run()
