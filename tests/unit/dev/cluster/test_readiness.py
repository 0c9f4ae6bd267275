"""faceserve.dev.cluster.readiness: which instances nginx is told to leave out, from their /readyz answers."""

from __future__ import annotations

import httpx
import pytest

from faceserve.dev.cluster.readiness import ReadinessWatch

A, B = "127.0.0.1:1001", "127.0.0.1:1002"


class Instances:
    """What each instance's /readyz does: an HTTP status, or "refused" (nothing listens) or "timeout"."""

    def __init__(self):
        self.answers = {A: 200, B: 200}

    def handle(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[f"{request.url.host}:{request.url.port}"]
        if answer == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if answer == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        assert request.url.path == "/readyz"
        return httpx.Response(answer)


@pytest.fixture
def setup():
    instances, routed = Instances(), []
    watch = ReadinessWatch({a: f"http://{a}" for a in (A, B)}, routed.append)
    client = httpx.Client(transport=httpx.MockTransport(instances.handle))
    yield instances, routed, lambda: watch.poll(client)
    client.close()


def test_ready_instances_are_left_alone(setup):
    instances, routed, poll = setup
    for _ in range(3):
        poll()
    assert routed == []


def test_a_dead_instance_is_taken_out_at_the_first_poll_and_put_back_at_its_first_200(setup):
    instances, routed, poll = setup
    instances.answers[A] = "refused"
    poll()
    assert routed == [frozenset({A})]
    poll()
    assert routed == [frozenset({A})]  # told once per change
    instances.answers[A] = 200
    poll()
    assert routed == [frozenset({A}), frozenset()]


@pytest.mark.parametrize("answer", [503, "timeout"])
def test_an_unready_or_slow_instance_is_taken_out_after_two_polls_in_a_row(setup, answer):
    instances, routed, poll = setup
    instances.answers[B] = answer
    poll()
    assert routed == []  # one slow poll under load is no reason
    instances.answers[B] = 200
    poll()
    instances.answers[B] = answer
    poll()
    assert routed == []  # not in a row
    poll()
    assert routed == [frozenset({B})]


def test_when_no_instance_is_ready_none_is_taken_out(setup):
    instances, routed, poll = setup
    instances.answers[A] = "refused"
    poll()
    instances.answers[B] = 503
    poll()
    poll()
    assert routed == [frozenset({A}), frozenset()]  # the instances' own 503s say why, nginx's would not
    instances.answers[B] = 200
    poll()
    assert routed[-1] == frozenset({A})


def test_a_failed_reconfiguration_is_tried_again_at_the_next_poll(setup):
    instances, _, _ = setup
    calls = []

    def route(unready):
        calls.append(unready)
        if len(calls) == 1:
            raise RuntimeError("nginx refused its configuration")

    watch = ReadinessWatch({a: f"http://{a}" for a in (A, B)}, route)
    instances.answers[A] = "refused"
    with httpx.Client(transport=httpx.MockTransport(instances.handle)) as client:
        watch.poll(client)
        watch.poll(client)
    assert calls == [frozenset({A}), frozenset({A})]
    assert watch.unready == frozenset({A})
