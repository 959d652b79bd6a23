"""The HTTP API (FastAPI) and the dashboard's static files.

A thin layer over :class:`~iiotbed.platform.queries.PlatformView`: parameters are
validated here (bad input is a 4xx with a message, never a 500), errors are translated at
this boundary. OpenAPI at ``/openapi.json``, interactive docs at ``/docs``, the dashboard
at ``/``.

Access: reads (GET, HEAD) are open. With an ``api_token`` (the secure profile) every other
method (writes, run control) needs ``Authorization: Bearer <token>``, compared in constant
time, else 401; without one (the open profile, listening on 127.0.0.1) such requests are
taken from loopback clients only, else 403. No CORS headers are ever sent, so a page of
another origin cannot read the API from a browser.
"""

from __future__ import annotations

import hmac
import ipaddress
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from iiotbed import __version__
from iiotbed._json import finite
from iiotbed.errors import NotFound, QueryError, StorageError
from iiotbed.mqtt import redact_url
from iiotbed.platform.kpi import KPI_INFO
from iiotbed.platform.queries import PlatformView, asset_dict, run_dict

__all__ = ["DASHBOARD_DIR", "create_app"]

DASHBOARD_DIR = Path(str(files("iiotbed.platform").joinpath("dashboard")))

Seconds = Annotated[
    float | None,
    Query(allow_inf_nan=False, ge=-1e12, le=1e12, description="seconds since the scenario epoch"),
]
RunId = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="a run id (default: the live or newest run)"),
]


def _bad(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


_READS = frozenset({"GET", "HEAD"})


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # not an address: an in-process ASGI transport (httpx/Starlette's test client), local
        return True


def _refused(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="iiotbed"'} if status == 401 else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(
    view: PlatformView, *, broker: str | None = None, api_token: str | None = None
) -> FastAPI:
    """The platform's ASGI app over ``view`` (store, catalog and optional live ingest);
    ``api_token``: the bearer token writes need (the secure profile)."""
    app = FastAPI(
        title="iiotbed platform",
        version=__version__,
        description="Runs, assets, series, ISO 22400 KPIs, the +20 % comparison and "
        "identifier resolution of a simulated Industrial-IoT factory.",
    )

    token = api_token.encode() if api_token else None
    if api_token is not None and len(api_token) < 16:
        raise ValueError("the API token must have at least 16 characters (iiotbed certs makes one)")

    @app.middleware("http")
    async def writes_need_token(request: Request, call_next: Any) -> Response:
        if request.method not in _READS:
            if token is None:
                client = request.client.host if request.client is not None else None
                if not _loopback(client):
                    return _refused(
                        403, "writes are taken from this machine only; the secure profile "
                        "takes them from anywhere with its bearer token",
                    )  # fmt: skip
            else:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not given:
                    return _refused(401, "this request needs 'Authorization: Bearer <token>' "
                                    "(the token is in the secrets iiotbed certs wrote)")  # fmt: skip
                if not hmac.compare_digest(given.strip().encode(), token):
                    return _refused(401, "the bearer token is not the platform's")
        response: Response = await call_next(request)
        return response

    @app.middleware("http")
    async def reject_nul(request: Request, call_next: Any) -> Response:
        # NUL cannot be stored in PostgreSQL text: refuse it at the door, not in the database
        raw = request.scope.get("query_string", b"")
        if "\x00" in unquote(request.url.path) or b"%00" in raw or b"\x00" in raw:
            return JSONResponse({"detail": "NUL characters are not allowed"}, status_code=400)
        response: Response = await call_next(request)
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StorageError)
    async def storage_down(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"the store is unavailable: {exc}"}, status_code=503)

    # ------------------------------------------------------------------ service

    @app.get("/api/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, the store and broker in use, and ingest metrics."""
        ingest = view.ingest
        return {
            "status": "ok",
            "version": __version__,
            "store": view.store.url,
            "broker": redact_url(broker) if broker is not None else None,
            "ingest": ingest.metrics.to_dict() if ingest is not None else None,
        }

    # ------------------------------------------------------------------ runs and assets

    @app.get("/api/runs", tags=["runs"])
    async def runs() -> list[dict[str, Any]]:
        """Every stored run, oldest start first."""
        return [run_dict(r) for r in await view.store.list_runs()]

    @app.get("/api/runs/{run_id}", tags=["runs"])
    async def run(run_id: str) -> dict[str, Any]:
        """One run: metadata, sample and event counts, time span, answer key."""
        return await view.run_detail(run_id)

    @app.get("/api/assets", tags=["assets"])
    async def assets(
        prefix: Annotated[
            str | None, Query(max_length=1000, description="an asset path: this subtree only")
        ] = None,
    ) -> list[dict[str, Any]]:
        """The asset tree (ISA-95 paths) with each asset's identification."""
        return [asset_dict(a) for a in await view.store.assets(prefix or None)]

    @app.get("/api/assets/{path:path}/latest", tags=["assets"])
    async def latest(
        path: str,
        run_id: RunId = None,
        subtree: Annotated[bool, Query(description="include assets below this one")] = False,
    ) -> dict[str, Any]:
        """The newest value of every tag of an asset in a run."""
        path = path.strip("/")
        if not path:
            raise _bad("give an asset path, e.g. /api/assets/acme/site/area/line-1/latest")
        return await view.latest(path, run_id, subtree)

    # ------------------------------------------------------------------ series and KPIs

    @app.get("/api/series", tags=["data"])
    async def series(
        asset: Annotated[str, Query(min_length=1, max_length=1000, description="asset path")],
        tag: Annotated[str, Query(min_length=1, max_length=200, description="tag name")],
        run_id: RunId = None,
        start: Seconds = None,
        end: Seconds = None,
        every: Annotated[
            float | None,
            Query(allow_inf_nan=False, gt=0, le=1e9, description="bucket width (s)"),
        ] = None,
        agg: Annotated[
            Literal["last", "mean", "min", "max", "count"], Query(description="per bucket")
        ] = "last",
        limit: Annotated[int, Query(ge=1, le=1_000_000, description="max points")] = 10_000,
    ) -> dict[str, Any]:
        """A time series in ``[start, end)``; with ``every``, one aggregated point per bucket."""
        if start is not None and end is not None and end < start:
            raise _bad(f"end ({end:g}) must not precede start ({start:g})")
        if (
            every is not None
            and start is not None
            and end is not None
            and (end - start) / every > 10 * limit
        ):
            raise _bad(
                f"{(end - start) / every:.0f} buckets of {every:g} s; use a wider 'every' "
                f"or a shorter range (at most {10 * limit} buckets)"
            )
        r = await view.run(run_id)
        points = await view.store.query(r.run_id, asset, tag, start, end, every, agg)
        truncated = len(points) > limit
        return {
            "run_id": r.run_id,
            "asset": asset,
            "tag": tag,
            "every": every,
            "agg": agg if every is not None else None,
            "truncated": truncated,
            "points": [[p.t, finite(p.value)] for p in points[:limit]],
        }

    @app.get("/api/kpis", tags=["kpis"])
    async def kpis(
        run_id: RunId = None,
        start: Seconds = None,
        end: Seconds = None,
        by: Annotated[
            Literal["station", "stage", "line", "shift"], Query(description="grouping")
        ] = "line",
    ) -> dict[str, Any]:
        """ISO 22400-2 KPIs of a window: live (no start/end on a live run) or from the store."""
        return await view.kpis(run_id, start, end, by)

    @app.get("/api/kpis/info", tags=["kpis"])
    async def kpi_info() -> dict[str, Any]:
        """Every KPI's unit, description and direction."""
        return {k: v._asdict() for k, v in KPI_INFO.items()}

    @app.get("/api/compare", tags=["kpis"])
    async def compare(
        run_id: RunId = None,
        metric: Annotated[str, Query(max_length=100)] = "labour_productivity",
        goal: Annotated[
            float | None, Query(allow_inf_nan=False, ge=-1.0, le=100.0, description="0.2 = +20 %")
        ] = None,
    ) -> dict[str, Any]:
        """Baseline vs upgrade: paired improvement, its 95 % CI and the verdict on the goal."""
        return await view.compare(run_id, metric, goal)

    @app.get("/api/resolve/{identifier:path}", tags=["identity"])
    async def resolve(identifier: str, run_id: RunId = None) -> dict[str, Any]:
        """An asset path or identifier → its record; a unit id → record and genealogy."""
        identifier = identifier.strip("/")
        if not identifier:
            raise _bad("give an identifier, e.g. /api/resolve/88.999.1/panel-17")
        return await view.resolve(identifier, run_id)

    @app.get("/api/live", tags=["dashboard"])
    async def live(run_id: RunId = None) -> dict[str, Any]:
        """The dashboard's snapshot: station states, OEE, AMRs, technicians, throughput, goal."""
        return await view.snapshot(run_id)

    # ------------------------------------------------------------------ dashboard

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html")

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")
    return app
