"""App package endpoints: publish (store the zip, then `AppVersionPublished`), activate and
roll back (`AppVersionActivated`), list, download. Events go straight to `apps`, keyed by app;
the reply waits until the gateway's listener has folded them, so a read right after sees them.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from elves.api.access import Target, allowed, who
from elves.api.gateway import gateway, write
from elves.api.requests import parse_json_body
from elves.app_versions import decide_activate, decide_publish, to_json
from elves.appstore import AppStore
from elves.errors import BadPackage, MissingField, PackageTooLarge, UnknownAppVersion
from elves.packages import check_names, inspect
from elves.schemas.events import AppVersionPublished, new_id

SHA256_HEADER = "x-elves-sha256"


def _now() -> int:
    return int(time.time() * 1000)


async def publish(request: Request) -> JSONResponse:
    gw = gateway(request)
    app, version = request.path_params["app"], request.path_params["version"]
    check_names(app, version)
    limit = gw.settings.max_package_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PackageTooLarge(f"the package is {declared} bytes, over the limit of {limit}")
    data = await request.body()
    if not data:
        raise BadPackage("no package: send the zip as the request body (application/zip)")
    manifest = await asyncio.to_thread(inspect, data, app, version, limit)
    sha = await asyncio.to_thread(AppStore(gw.settings.app_store_dir).put, data)
    activate = request.query_params.get("activate", "true").lower() not in ("false", "0", "no")
    published = AppVersionPublished(
        event_id=new_id(),
        occurred_at=_now(),
        app=app,
        version=version,
        sha256=sha,
        size=len(data),
        entry=manifest.entry,
        proxy=manifest.proxy,
        description=manifest.description,
        published_by=who(request),
    )
    events = decide_publish(gw.listener.app(app), published, new_id() if activate else None)
    await write(gw, "apps", app, events)
    state = gw.listener.app(app)
    return JSONResponse(
        {
            "app": app,
            "version": version,
            "sha256": sha,
            "size": len(data),
            "new": published in events,
            "active": state.active if state is not None else None,
        },
        status_code=201,
    )


async def activate(request: Request) -> JSONResponse:
    gw = gateway(request)
    app = request.path_params["app"]
    body = parse_json_body(await request.body())
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise MissingField("`version` is required: the version to run", field="version")
    events = decide_activate(gw.listener.app(app), app, version, new_id(), _now(), who(request))
    await write(gw, "apps", app, events)
    previous = getattr(events[0], "previous", None)
    return JSONResponse({"app": app, "active": version, "previous": previous})


async def list_apps(request: Request) -> JSONResponse:
    gw = gateway(request)
    states = [s for s in gw.listener.apps() if allowed(request, Target(app=s.app))]
    return JSONResponse({"apps": [to_json(s) for s in states]})


async def get_app(request: Request) -> JSONResponse:
    gw = gateway(request)
    app = request.path_params["app"]
    state = gw.listener.app(app)
    if state is None:
        raise UnknownAppVersion(f"no app {app} was published", app=app)
    return JSONResponse(to_json(state))


async def download(request: Request) -> Response:
    """The package's bytes as stored, with the sha256 they were published with: the agent
    checks one against the other."""
    gw = gateway(request)
    app, version = request.path_params["app"], request.path_params["version"]
    state = gw.listener.app(app)
    known = state.versions.get(version) if state is not None else None
    if known is None:
        raise UnknownAppVersion(f"no version {version} of {app} was published", app=app)
    data = await asyncio.to_thread(AppStore(gw.settings.app_store_dir).get, known.sha256)
    if data is None:
        raise UnknownAppVersion(f"{app} {version}: the package is missing from the store", app=app)
    return Response(
        data,
        media_type="application/zip",
        headers={
            SHA256_HEADER: known.sha256,
            "content-disposition": f'attachment; filename="{app}_{version}.zip"',
        },
    )
