"""The app versions fold: publish, activate, roll back; what agents should run."""

from __future__ import annotations

import pytest

from elves import app_versions as m
from elves.errors import UnknownAppVersion, VersionTaken
from elves.schemas.events import AppVersionActivated, AppVersionPublished

T0 = 1_700_000_000_000


def published(version: str, sha: str, at: int = T0, app: str = "demo") -> AppVersionPublished:
    return AppVersionPublished(f"p-{version}-{sha}", at, app, version, sha, 10, "app-worker.py")


def test_a_publish_with_activation_makes_the_version_desired() -> None:
    events = m.decide_publish(None, published("1", "a"), "act-1")
    assert [type(e) for e in events] == [AppVersionPublished, AppVersionActivated]
    apps = m.fold_all(events)
    assert apps["demo"].active == "1"
    assert apps["demo"].activation_id == "act-1"
    assert m.desired(apps)["demo"].sha256 == "a"


def test_a_publish_without_activation_keeps_the_active_version() -> None:
    apps = m.fold_all(m.decide_publish(None, published("1", "a"), "act-1"))
    apps = m.fold_all(m.decide_publish(apps["demo"], published("2", "b", T0 + 1), None), apps)
    assert apps["demo"].active == "1"
    assert set(apps["demo"].versions) == {"1", "2"}


def test_rollback_is_activating_an_older_version() -> None:
    apps = m.fold_all(m.decide_publish(None, published("1", "a"), "act-1"))
    apps = m.fold_all(m.decide_publish(apps["demo"], published("2", "b", T0 + 1), "act-2"), apps)
    assert apps["demo"].active == "2"
    back = m.decide_activate(apps["demo"], "demo", "1", "act-3", T0 + 2)
    assert isinstance(back[0], AppVersionActivated)
    assert (back[0].sha256, back[0].previous) == ("a", "2")
    apps = m.fold_all(back, apps)
    assert (apps["demo"].active, apps["demo"].activation_id) == ("1", "act-3")


def test_activating_the_same_version_again_is_a_new_request() -> None:
    apps = m.fold_all(m.decide_publish(None, published("1", "a"), "act-1"))
    apps = m.fold_all(m.decide_activate(apps["demo"], "demo", "1", "act-2", T0 + 1), apps)
    assert (apps["demo"].active, apps["demo"].activation_id) == ("1", "act-2")


def test_the_same_package_published_again_is_no_new_version() -> None:
    apps = m.fold_all(m.decide_publish(None, published("1", "a"), None))
    again = m.decide_publish(apps["demo"], published("1", "a", T0 + 5), "act-1")
    assert [type(e) for e in again] == [AppVersionActivated]


def test_other_content_under_a_taken_version_is_refused() -> None:
    apps = m.fold_all(m.decide_publish(None, published("1", "a"), None))
    with pytest.raises(VersionTaken) as err:
        m.decide_publish(apps["demo"], published("1", "b"), None)
    assert err.value.code == "413.4"


def test_the_first_publish_of_a_version_stands_in_the_fold() -> None:
    apps = m.fold_all([published("1", "a"), published("1", "b", T0 + 1)])
    assert apps["demo"].versions["1"].sha256 == "a"


def test_unknown_app_or_version_cannot_be_activated() -> None:
    with pytest.raises(UnknownAppVersion) as err:
        m.decide_activate(None, "demo", "1", "x", T0)
    assert err.value.code == "413.3"
    apps = m.fold_all([published("1", "a")])
    with pytest.raises(UnknownAppVersion):
        m.decide_activate(apps["demo"], "demo", "9", "x", T0)


def test_an_activation_naming_an_unpublished_package_is_ignored() -> None:
    apps = m.fold_all([published("1", "a")])
    apps = m.fold_all([AppVersionActivated("x", T0, "demo", "1", "not-a")], apps)
    assert apps["demo"].active is None
    assert m.desired(apps) == {}


def test_apps_are_folded_apart() -> None:
    apps = m.fold_all(
        m.decide_publish(None, published("1", "a"), "act-a")
        + m.decide_publish(None, published("7", "b", app="other"), "act-b")
    )
    assert {k: v.version for k, v in m.desired(apps).items()} == {"demo": "1", "other": "7"}
    assert m.to_json(apps["demo"])["active"] == "1"
