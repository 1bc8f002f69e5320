"""Which versions each app has and which one agents should run: a pure fold over `apps`.

`apply(state, event)` folds `AppVersionPublished`, `AppVersionActivated` and `AppPermissionSet`
(the agents the app may run on, `permissions.py`); `decide_publish` and
`decide_activate` turn a request into the events to write, or raise before any event exists.
No Kafka, no clock, no I/O: times and ids arrive as arguments. The gateway and every agent fold
the same log, so they agree on the desired version of every app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from elves.errors import UnknownAppVersion, VersionTaken
from elves.permissions import Rule, rule_of
from elves.schemas.events import AppPermissionSet, AppVersionActivated, AppVersionPublished, Event

APP_EVENTS = (AppVersionPublished, AppVersionActivated, AppPermissionSet)


@dataclass(frozen=True)
class Version:
    version: str
    sha256: str
    size: int
    entry: str
    published_at: int
    proxy: str | None = None
    description: str = ""


@dataclass(frozen=True)
class AppState:
    app: str
    versions: Mapping[str, Version] = field(default_factory=dict)
    active: str | None = None
    # The event that set `active`: activating the same version again is a new request, so an
    # agent whose install failed tries again.
    activation_id: str | None = None
    activated_at: int = 0
    # The agents it may run on; None: no rule was set, the center's default holds. An app may
    # have a rule before any version is published (its worker may be in ELVES_APPS_DIR).
    permission: Rule | None = None


Apps = Mapping[str, AppState]


def apply(state: AppState | None, event: Event) -> AppState | None:
    match event:
        case AppVersionPublished():
            base = state or AppState(event.app)
            if event.version in base.versions:
                return base  # a version never changes: the first publish of it stands
            version = Version(
                event.version,
                event.sha256,
                event.size,
                event.entry,
                event.occurred_at,
                event.proxy,
                event.description,
            )
            return replace(base, versions={**base.versions, event.version: version})
        case AppVersionActivated():
            base = state or AppState(event.app)
            known = base.versions.get(event.version)
            if known is None or known.sha256 != event.sha256:
                return base  # cannot name a package no one published
            return replace(
                base,
                active=event.version,
                activation_id=event.event_id,
                activated_at=event.occurred_at,
            )
        case AppPermissionSet():
            return replace(state or AppState(event.app), permission=rule_of(event))
        case _:
            return state


def fold_all(events: Iterable[Event], apps: Apps | None = None) -> dict[str, AppState]:
    """Every app's state after these events (on top of `apps`)."""
    out = dict(apps or {})
    for event in events:
        app = getattr(event, "app", None)
        if isinstance(event, APP_EVENTS) and app is not None:
            new = apply(out.get(app), event)
            if new is not None:
                out[app] = new
    return out


def decide_publish(
    state: AppState | None,
    published: AppVersionPublished,
    activation_id: str | None,
) -> list[Event]:
    """The events of a publish: the version (unless this very package is already it) and, with
    an `activation_id`, its activation. Other content under a taken version is refused."""
    events: list[Event] = []
    known = state.versions.get(published.version) if state is not None else None
    if known is not None and known.sha256 != published.sha256:
        raise VersionTaken(
            f"{published.app} {published.version} was published with other content "
            f"(sha256 {known.sha256}); publish a new version",
            app=published.app,
            version=published.version,
        )
    if known is None:
        events.append(published)
    if activation_id is not None:
        events.append(
            AppVersionActivated(
                event_id=activation_id,
                occurred_at=published.occurred_at,
                app=published.app,
                version=published.version,
                sha256=published.sha256,
                previous=state.active if state is not None else None,
                requested_by=published.published_by,
            )
        )
    return events


def decide_activate(
    state: AppState | None,
    app: str,
    version: str,
    event_id: str,
    occurred_at: int,
    requested_by: str | None = None,
) -> list[Event]:
    """Activate a published version (a newer one, the same again, or an older: a rollback)."""
    known = state.versions.get(version) if state is not None else None
    if state is None or known is None:
        what = f"app {app}" if state is None else f"version {version} of {app}"
        raise UnknownAppVersion(f"no {what} was published", app=app, version=version)
    return [
        AppVersionActivated(
            event_id=event_id,
            occurred_at=occurred_at,
            app=app,
            version=version,
            sha256=known.sha256,
            previous=state.active,
            requested_by=requested_by,
        )
    ]


def permission(state: AppState | None, default: Rule) -> Rule:
    """The rule that holds for an app: its own, else `default` (`ELVES_APP_DEFAULT`)."""
    return state.permission if state is not None and state.permission is not None else default


def desired(apps: Apps) -> dict[str, Version]:
    """app -> the version agents should run, for the apps that have one active."""
    return {
        name: state.versions[state.active]
        for name, state in apps.items()
        if state.active is not None and state.active in state.versions
    }


def to_json(state: AppState) -> dict[str, object]:
    return {
        "app": state.app,
        "active": state.active,
        "activated_at": state.activated_at or None,
        "permission": state.permission.to_json() if state.permission is not None else None,
        "versions": [
            {
                "version": v.version,
                "sha256": v.sha256,
                "size": v.size,
                "entry": v.entry,
                "proxy": v.proxy,
                "description": v.description,
                "published_at": v.published_at,
            }
            for v in sorted(state.versions.values(), key=lambda v: v.published_at)
        ],
    }
