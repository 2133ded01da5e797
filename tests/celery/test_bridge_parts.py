"""The bridge's pure parts: the message format, routing and the configuration check."""

from __future__ import annotations

import pytest
from celery import Celery

from sayiir_celery import CeleryConfigError, MessageError, Route, SayiirCelery, StepMessage
from sayiir_celery.config_check import check_config
from sayiir_celery.routing import Router, celery_priority
from sayiir_core import Flow, InMemoryBackend, task


@task("fetch", tags=["io"], timeout=120, priority=1)
def fetch(x: int) -> int:
    return x


@task("crunch", tags=["cpu", "io"])
def crunch(x: int) -> int:
    return x


@task("charge")
def charge(x: int) -> int:
    return x


FLOW = Flow("parts").then(fetch).then(crunch).then(charge).build()


def test_a_message_reads_back_what_it_wrote() -> None:
    message = StepMessage("order-7", "charge", 2, "checkout", "abc123", 5)
    assert StepMessage.from_json(message.to_json()) == message


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([1, 2], "JSON object"),
        ({"v": 99}, "version 99"),
        ({"v": 1, "instance": "i", "step": "s", "attempt": 1, "workflow": "w"}, "definition"),
        (
            {"v": 1, "instance": "", "step": "s", "attempt": 1, "workflow": "w", "definition": "h"},
            "empty",
        ),
        (
            {
                "v": 1,
                "instance": "i",
                "step": "s",
                "attempt": -1,
                "workflow": "w",
                "definition": "",
            },
            "integers",
        ),
    ],
)
def test_a_bad_message_says_what_is_wrong(body: object, complaint: str) -> None:
    with pytest.raises(MessageError, match=complaint):
        StepMessage.from_json(body)


def test_routes_by_task_then_tag_then_default() -> None:
    router = Router(
        queues_by_tag={"cpu": "cpu", "io": Route("io", routing_key="io.fast")},
        queues_by_task={"charge": Route("payments", priority=9)},
        default_queue="default",
        transport="redis",
    )
    tasks = FLOW.tasks
    assert router.options(tasks["fetch"]) == {
        "queue": "io",
        "routing_key": "io.fast",
        "priority": 0,
    }
    assert router.options(tasks["crunch"]) == {"queue": "cpu", "routing_key": "cpu"}
    assert router.options(tasks["charge"]) == {
        "queue": "payments",
        "routing_key": "payments",
        "priority": 9,
    }
    assert router.queues == {"cpu", "io", "payments", "default"}
    assert Router().options(tasks["charge"]) == {}


def test_priorities_follow_the_brokers_order() -> None:
    assert [celery_priority(p, "redis") for p in (1, 3, 5)] == [0, 4, 8]
    assert [celery_priority(p, "amqp") for p in (1, 3, 5)] == [5, 3, 1]


def test_a_route_needs_a_queue() -> None:
    with pytest.raises(ValueError, match="queue name"):
        Route("")
    with pytest.raises(TypeError, match="queues_by_tag"):
        Router(queues_by_tag={"io": 3})  # type: ignore[dict-item]


def test_the_config_check_names_each_setting_and_its_fix() -> None:
    app = Celery("check", broker="redis://127.0.0.1:6379/11", set_as_current=False)
    app.conf.update(
        accept_content=["pickle"],
        broker_transport_options={"visibility_timeout": 60},
        task_always_eager=True,
    )
    bridge = SayiirCelery(app, backend=InMemoryBackend(), workflows=[FLOW])
    problems = {problem.setting: problem for problem in bridge.config_problems("gevent")}
    assert set(problems) == {
        "task_always_eager",
        "accept_content",
        "worker_prefetch_multiplier",
        "broker_transport_options['visibility_timeout']",
        "worker pool",
    }
    assert problems["worker_prefetch_multiplier"].fix == ("app.conf.worker_prefetch_multiplier = 1")
    # Twice the longest step timeout (120 s), plus the 1 s a task may go on with a chain.
    assert (
        "'visibility_timeout': 241"
        in problems["broker_transport_options['visibility_timeout']"].fix
    )
    error = CeleryConfigError(list(problems.values()))
    assert "accept_content = ['pickle', 'json']" in str(error)


def test_the_visibility_timeout_must_also_cover_the_continuation_budget() -> None:
    """A chain's task may start steps for ``continue_for`` seconds, the last of which
    may run its whole timeout, before its message is acknowledged."""

    def app() -> Celery:
        app = Celery("budget", broker="redis://127.0.0.1:6379/11", set_as_current=False)
        app.conf.update(
            worker_prefetch_multiplier=1, broker_transport_options={"visibility_timeout": 122}
        )
        return app

    setting = "broker_transport_options['visibility_timeout']"
    within = SayiirCelery(app(), backend=InMemoryBackend(), workflows=[FLOW], continue_for=1.0)
    assert within.config_problems("prefork") == []
    beyond = SayiirCelery(app(), backend=InMemoryBackend(), workflows=[FLOW], continue_for=5.0)
    [problem] = beyond.config_problems("prefork")
    assert problem.setting == setting
    assert "5 s (continue_for)" in problem.why
    assert "120 s (its timeout)" in problem.why
    assert "'visibility_timeout': 245" in problem.fix
    assert check_config(beyond.app, "sayiir_celery.run_step", [FLOW], continue_for=0.0) == []


def test_continue_for_is_zero_or_more_seconds() -> None:
    def app() -> Celery:
        return Celery("negative", broker="amqp://guest@127.0.0.1//", set_as_current=False)

    with pytest.raises(ValueError, match="continue_for"):
        SayiirCelery(app(), backend=InMemoryBackend(), workflows=[FLOW], continue_for=-1)
    assert SayiirCelery(app(), backend=InMemoryBackend(), workflows=[FLOW]).continue_for == 1.0


def test_a_good_config_has_no_problems() -> None:
    app = Celery("good", broker="amqp://guest@127.0.0.1//", set_as_current=False)
    app.conf.update(worker_prefetch_multiplier=1)
    bridge = SayiirCelery(app, backend=InMemoryBackend(), workflows=[FLOW])
    assert check_config(app, "sayiir_celery.run_step", [FLOW], pool="prefork") == []
    assert bridge.app.tasks["sayiir_celery.run_step"].acks_late


def test_the_bridge_refuses_a_backend_without_step_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sayiir_core import SqliteBackend

    app = Celery("sqlite", broker="redis://127.0.0.1:6379/11", set_as_current=False)
    with pytest.raises(TypeError, match="step queue"):
        SayiirCelery(app, backend=SqliteBackend(str(tmp_path / "x.db")), workflows=[FLOW])


def test_early_acknowledgement_is_asked_for_not_slipped_in() -> None:
    """``acks_late=False`` on the bridge registers the task so and the check accepts it;
    the same setting slipped in through task_annotations is reported."""
    app = Celery("early", broker="amqp://guest@127.0.0.1//", set_as_current=False)
    app.conf.update(worker_prefetch_multiplier=1)
    bridge = SayiirCelery(app, backend=InMemoryBackend(), workflows=[FLOW], acks_late=False)
    assert not bridge.app.tasks["sayiir_celery.run_step"].acks_late
    assert bridge.config_problems("prefork") == []

    other = Celery("slipped", broker="amqp://guest@127.0.0.1//", set_as_current=False)
    other.conf.update(
        worker_prefetch_multiplier=1,
        task_annotations={"sayiir_celery.run_step": {"acks_late": False}},
    )
    slipped = SayiirCelery(other, backend=InMemoryBackend(), workflows=[FLOW])
    problems = [problem.setting for problem in slipped.config_problems("prefork")]
    assert problems == ["acks_late of task 'sayiir_celery.run_step'"]


def test_a_step_message_asks_for_no_result_and_says_what_it_runs(
    broker: tuple[str, str],
) -> None:
    """No result subscription per step (a Redis result backend would add a command per
    publish) and a short argsrepr for monitoring, read back from the broker."""
    import json

    import redis

    from sayiir_core.backends.step_queue import StepRef, StepTicket
    from sayiir_core.runtime.loop_thread import run_sync

    url, prefix = broker
    app = Celery("published", broker=url, backend=url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    bridge = SayiirCelery(app, backend=InMemoryBackend(), workflows=[FLOW], default_queue="q")
    ticket = StepTicket(StepRef("i-1", "charge", 1), "parts", FLOW.definition_hash, b"1", 3, 0.0)

    run_sync(bridge.send_steps([ticket]))

    client = redis.Redis.from_url(url)
    try:
        raw = client.lpop(f"{prefix}q")
    finally:
        client.close()
    assert isinstance(raw, bytes)  # one message popped, as Redis returns it
    headers = json.loads(raw)["headers"]
    assert headers["argsrepr"] == "('i-1', 'charge', attempt 1)"
    assert headers["ignore_result"] is True
    assert not app.backend.result_consumer.subscribed_to


def test_a_task_goes_on_only_with_one_next_step_of_its_chain_on_its_queue() -> None:
    from sayiir_celery.continuation import Continuation

    now = [100.0]
    router = Router(
        queues_by_task={"crunch": "main"}, queues_by_tag={"io": "io"}, default_queue="main"
    )

    def options_of(message: StepMessage) -> dict[str, object]:
        return router.options(FLOW.tasks[message.step_key])

    continuation = Continuation(1.0, options_of, clock=lambda: now[0])
    deadline = continuation.deadline()

    def message(step: str, attempt: int = 1, instance: str = "i-1") -> StepMessage:
        return StepMessage(instance, step, attempt, "parts", FLOW.definition_hash)

    ran = message("charge")
    main = router.options(FLOW.tasks["charge"])
    assert router.options(FLOW.tasks["crunch"]) == main
    crunch = (message("crunch"), main)

    outbox = [crunch]
    assert continuation.next_step(ran, outbox, deadline) == crunch
    assert outbox == []  # taken: not published
    # Two next steps (fork branches, map items): both published.
    outbox = [crunch, crunch]
    assert continuation.next_step(ran, outbox, deadline) is None
    assert len(outbox) == 2
    # Another queue: published, for that queue's workers.
    fetch = (message("fetch"), router.options(FLOW.tasks["fetch"]))
    assert continuation.next_step(ran, [fetch], deadline) is None
    # Another priority or routing key on the same queue is another route too.
    assert continuation.next_step(ran, [(crunch[0], {**main, "priority": 0})], deadline) is None
    # A retry of the step that just ran, or a step of another instance: published.
    assert continuation.next_step(ran, [(message("charge", 2), main)], deadline) is None
    other = (message("crunch", instance="i-2"), main)
    assert continuation.next_step(ran, [other], deadline) is None
    # The budget spent: published.
    now[0] = deadline
    assert continuation.next_step(ran, [crunch], deadline) is None
    # A budget of 0 is spent at once: every step is its own message.
    never = Continuation(0.0, options_of, clock=lambda: now[0])
    assert never.next_step(ran, [crunch], never.deadline()) is None


def test_a_task_claims_with_its_commit_only_the_step_it_would_run_next() -> None:
    """``wants``: asked before the commit about the one step the advance would send (the
    commit then claims it for the task), by the same rules as ``next_step``."""
    from sayiir_celery.continuation import Continuation
    from sayiir_core.backends.step_queue import StepRef, StepTicket

    now = [100.0]
    router = Router(
        queues_by_task={"crunch": "main"}, queues_by_tag={"io": "io"}, default_queue="main"
    )
    continuation = Continuation(
        1.0, lambda m: router.options(FLOW.tasks[m.step_key]), clock=lambda: now[0]
    )
    deadline = continuation.deadline()
    ran = StepMessage("i-1", "charge", 1, "parts", FLOW.definition_hash)

    def ticket(step: str, attempt: int = 1, instance: str = "i-1") -> StepTicket:
        ref = StepRef(instance, step, attempt)
        return StepTicket(ref, "parts", FLOW.definition_hash, b"1", 3, 0.0)

    assert continuation.wants(ran, deadline, ticket("crunch"))
    assert not continuation.wants(ran, deadline, ticket("fetch"))  # another queue
    assert not continuation.wants(ran, deadline, ticket("charge", 2))  # a retry
    assert not continuation.wants(ran, deadline, ticket("crunch", instance="i-2"))
    now[0] = deadline
    assert not continuation.wants(ran, deadline, ticket("crunch"))  # the budget spent
