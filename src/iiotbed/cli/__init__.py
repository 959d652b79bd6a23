"""The ``iiotbed`` command line.

Heavy modules (SimPy, numpy, scipy, the KPI engine) are imported inside the commands so
that ``iiotbed --help`` stays instant. User mistakes exit with status 2 and a message
that names the file, the line and the fix; they never print a traceback.
"""

# importing a command module registers its commands on the app
from iiotbed.cli import (  # noqa: F401
    batch,
    gateway,
    health,
    lab,
    live,
    recording,
    run,
    runs,
    security,
)
from iiotbed.cli._common import app
from iiotbed.cli.run import RUN_SPEED

__all__ = ["RUN_SPEED", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
