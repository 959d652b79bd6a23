"""The platform service: store + UNS ingest + HTTP API/dashboard, as one ``async with``.

A TaskGroup owns the ingest and the uvicorn server; leaving the block stops both, closes
the store and stops the embedded broker when one was started (no ``broker`` given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import uvicorn

from iiotbed._aio import AsyncClosing
from iiotbed.errors import ConnectorError
from iiotbed.platform.api import create_app
from iiotbed.platform.broker import EmbeddedBroker
from iiotbed.platform.catalog import RunCatalog
from iiotbed.platform.ingest import Ingest, check_share, client_id_for
from iiotbed.platform.queries import PlatformView
from iiotbed.platform.store import Store, open_store
from iiotbed.protocols.uns import DEFAULT_ROOT
from iiotbed.security.layout import SecretsDir

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = ["Platform"]

log = logging.getLogger(__name__)

#: seconds a stop waits for open HTTP responses before cancelling them
GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner decides about Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Platform(AsyncClosing):
    """Ingest from ``broker`` into ``store`` and serve the API on ``host:port``.

    ``broker`` None starts an embedded broker on a free port (:attr:`broker_url` says
    which); ``port`` 0 takes a free port (:attr:`url` says which). ``scenario`` is the
    default scenario for runs the store does not describe. ``share`` makes the ingest a
    member of an MQTT shared subscription group (``$share/<share>/...``): several platforms
    on one store each ingest part of the stream; each member's MQTT session is named by
    the store, the group, this host's name and the HTTP port (:func:`client_id_for`), so
    give a member the same ``port`` when it restarts, to resume its session.
    """

    def __init__(
        self,
        *,
        broker: str | None = None,
        store: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        scenario: Scenario | None = None,
        root: str = DEFAULT_ROOT,
        current_values: bool = False,
        api_token: str | None = None,
        secrets: SecretsDir | None = None,
        share: str | None = None,
    ) -> None:
        self.api_token = api_token  # writes need it as a bearer token (the secure profile)
        self.secrets = secrets  # the embedded broker's TLS, logins and ACL (secure profile)
        self.broker_url = broker
        self.store_url = store
        self.host = host
        self.port = port
        self.scenario = scenario
        self.root = root
        self.current_values = current_values
        self.share = check_share(share) if share is not None else None
        self.store: Store | None = None
        self.ingest: Ingest | None = None
        self.view: PlatformView | None = None
        self._stack: AsyncExitStack | None = None
        self._server: _Server | None = None
        self._ingest_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def open(self) -> None:
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def _start(self, stack: AsyncExitStack) -> None:
        if self.broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker(secrets=self.secrets))
            self.broker_url = broker.url
        self.store = await stack.enter_async_context(open_store(self.store_url))
        catalog = RunCatalog(self.store, self.scenario)
        sock = self._bind()  # before the ingest: a member of a share group is named by its port
        stack.callback(sock.close)
        member = f"{socket.gethostname()}-{self.port}"
        self.ingest = Ingest(
            self.store,
            self.broker_url,
            catalog=catalog,
            root=self.root,
            current_values=self.current_values,
            share=self.share,
            client_id=client_id_for(self.store.url, self.root, self.share, member)
            if self.share is not None
            else None,
        )
        self.view = PlatformView(self.store, catalog, self.ingest)
        app = create_app(self.view, broker=self.broker_url, api_token=self.api_token)
        # a client that stops reading (a dashboard tab left open, a stalled download) must
        # not hold a stop forever: after this bound uvicorn cancels what still runs
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )  # fmt: skip
        self._server = server = _Server(config)
        # the TaskGroup is entered last, so it is left first: tasks stop before the store closes
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        stack.push_async_callback(self._stop_server)
        self._ingest_task = tg.create_task(self.ingest.run(), name="platform-ingest")
        serving = tg.create_task(server.serve(sockets=[sock]), name="platform-http")
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                raise ConnectorError(f"the HTTP server on {self.url} stopped at start")
            await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            # the broker may be slow to accept: go on, ingest keeps retrying in the background
            await asyncio.wait_for(self.ingest.ready.wait(), 5.0)
        log.info("platform at %s, broker %s, store %s", self.url, self.broker_url, self.store.url)

    def _bind(self) -> socket.socket:
        # bound here, not by uvicorn: a taken port becomes our error, not uvicorn's sys.exit
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConnectorError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                f"choose another --port (0 takes a free one)",
                endpoint=self.url,
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def _stop_server(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._ingest_task is not None:
            self._ingest_task.cancel()

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def serve_forever(self) -> None:
        """Run until cancelled (Ctrl-C in the CLI)."""
        await asyncio.Event().wait()
