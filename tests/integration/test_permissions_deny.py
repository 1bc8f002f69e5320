"""`ELVES_APP_DEFAULT=deny` on the real broker: an app with no rule runs nowhere, at the gateway
and in the streams alike, until a rule lets it. A stack of its own: the default is a setting of
every process, and the session's stack runs the sample apps with no rule."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elves.client import client
from elves.local import Stack, wait_for
from elves.topics import ensure_topics

from .conftest import stack_settings
from .test_permissions import set_rule, submit_straight, task_state

AGENT = "it-deny-1"


@pytest.fixture(scope="module")
def denying(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(
        kafka_bootstrap, "itdeny", tmp_path_factory.mktemp("deny"), app_default="deny"
    )
    ensure_topics(settings)
    stack = Stack(settings, client(settings, timeout=30))
    try:
        # Only while its processes start: the session's stack spawns agents later.
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ELVES_APP_DEFAULT", "deny")
            stack.start([AGENT])
        yield stack
    finally:
        stack.close()


def test_with_deny_an_app_without_a_rule_runs_nowhere_until_a_rule_lets_it(
    denying: Stack,
) -> None:
    stack = denying
    shown = stack.client.get("/api/v1/apps/apptest/permissions").json()
    assert (shown["default"], shown["anywhere"], shown["allowed_agents"]) == (True, False, [])
    refused = stack.exec(AGENT, "apptest", "helloword", {"my": "toryzen"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "413.5"), refused.text

    # The streams deny it too, for a command from any producer.
    task_id = submit_straight(stack, "apptest", AGENT)
    state = wait_for("the refusal", lambda: task_state(stack, task_id), 15)
    assert state["reason"] == f"[413.5] app apptest may not run on agent {AGENT}"

    set_rule(stack, "apptest", {"anywhere": True})
    ok = stack.exec(AGENT, "apptest", "helloword", {"my": "toryzen"})
    assert (ok.status_code, ok.json()["worker_message"]) == (200, "toryzen"), ok.text

    set_rule(stack, "apptest", {"agents": [AGENT]})
    named = stack.exec(AGENT, "apptest", "helloword", {"my": "named"})
    assert (named.status_code, named.json()["worker_message"]) == (200, "named"), named.text
    other = stack.exec(AGENT, "hostfacts", "facts")  # still no rule of its own: denied
    assert other.json()["error"]["code"] == "413.5", other.text
