"""The ``iiotbed`` command line.

Heavy modules (SimPy, numpy, scipy, the KPI engine) are imported inside the commands so
that ``iiotbed --help`` stays instant. User mistakes exit with status 2 and a message
that names the file, the line and the fix; they never print a traceback.
"""

from iiotbed.cli import batch, live, runs  # noqa: F401  (registers the commands on the app)
from iiotbed.cli._common import app
from iiotbed.cli.live import RUN_SPEED

__all__ = ["RUN_SPEED", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
