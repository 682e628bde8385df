"""Task workers without processes: a worker's TaskDispatcher linked to TaskWorkerServices over
in-memory transports, with task.Clock for timeouts; dispatch, errors, a task worker that dies,
and a draining one handing its queued tasks to its replacement (none lost, none run twice)."""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tx_swoole.config import parse_config
from tx_swoole.errors import (
    ConfigError,
    FrameTooLargeError,
    NoTaskWorkersError,
    TaskFailedError,
    TaskQueueFullError,
    TaskSerializationError,
    TaskTimeoutError,
    TaskWorkerDiedError,
)
from tx_swoole.process._task import RESULT, TASK, FrameReader, frame
from tx_swoole.process.task_worker import TaskChannel, TaskWorkerService
from tx_swoole.process.tasks import TaskDispatcher, TaskWorkerChannel

SETTINGS = {"worker_num": 2, "task_worker_num": 2, "package_max_length": 4096}
EVENTS = {"task": "tests.task_apps:add_one"}


def config(**settings: Any) -> Any:
    return parse_config({"server": {"type": "http", "app": "tests.http_apps:hello"},
                         "settings": {**SETTINGS, **settings}, "events": EVENTS})  # fmt: skip


class Link:
    """One worker's channel to one task worker, over two StringTransports."""

    def __init__(self, dispatcher: TaskDispatcher, service: TaskWorkerService, index: int):
        self.client = TaskWorkerChannel(dispatcher, index, pid=1000 + index)
        self.server = TaskChannel(service)
        self.ct, self.st = StringTransport(), StringTransport()
        self.server.makeConnection(self.st)
        self.client.makeConnection(self.ct)
        self.open = True

    def pump(self) -> bool:
        moved = False
        for src, dst in ((self.ct, self.server), (self.st, self.client)):
            data = src.value()
            if data:
                src.clear()
                dst.dataReceived(data)
                moved = True
        return moved

    def cut(self) -> None:
        """The task worker process is gone."""
        if self.open:
            self.open = False
            self.client.connectionLost(Failure(ConnectionDone()))
            self.server.connectionLost(Failure(ConnectionDone()))


class World:
    def __init__(self, handler: Any, count: int = 2, **settings: Any) -> None:
        self.clock = task.Clock()
        self.config = config(**settings)
        self.dispatcher = TaskDispatcher(self.config.settings, 0, self.clock)  # type: ignore[arg-type]
        self.services: list[TaskWorkerService] = []
        self.links: list[Link] = []
        for i in range(count):
            self.add(i, handler)

    def add(self, index: int, handler: Any) -> TaskWorkerService:
        service = TaskWorkerService(self.config, index=index, reactor=self.clock,  # type: ignore[arg-type]
                                    handler=handler)  # fmt: skip
        self.services.append(service)
        self.links.append(Link(self.dispatcher, service, index))
        return service

    def pump(self) -> None:
        for _ in range(100):
            self.clock.advance(0)  # the task worker's turn between tasks
            if not any([link.pump() for link in self.links if link.open]):
                return
        raise AssertionError("still talking after 100 rounds")


def results_or_none(d: defer.Deferred[Any]) -> Any:
    """What ``d`` fired with (None if not yet); a result stays on ``d``, a failure is taken."""
    out: list[Any] = []

    def keep(result: Any) -> Any:
        out.append(result)
        return None if isinstance(result, Failure) else result

    d.addBoth(keep)
    return out[0] if out else None


def results(d: defer.Deferred[Any]) -> Any:
    out = results_or_none(d)
    assert out is not None, "not fired"
    return out


def add_one(server: Any, task_id: int, src: int, data: Any) -> Any:
    return (data + 1, server.taskWorkerId, src, task_id)


def test_a_task_round_trip_with_ids() -> None:
    w = World(add_one)
    d = w.dispatcher.task(41)
    w.pump()
    value, index, src, task_id = results(d)
    assert value == 42 and src == 0 and task_id == 1 and index in (0, 1)
    assert w.dispatcher.stats() == {"task_count": 1, "tasking_num": 0, "task_queue_num": 0}


def test_the_least_busy_task_worker_gets_the_task_never_merely_the_next() -> None:
    held: list[defer.Deferred[Any]] = []

    def slow(server: Any, task_id: int, src: int, data: Any) -> Any:
        d: defer.Deferred[Any] = defer.Deferred()
        held.append(d)
        return d

    w = World(slow)
    first, second = w.dispatcher.task(1), w.dispatcher.task(2)
    w.pump()
    assert {s.current[1] for s in w.services if s.current} == {1, 2}  # one each
    held[0].callback("one")  # task worker of task 1 is idle again
    w.pump()
    assert results(first) == "one"
    idle = next(s for s in w.services if s.current is None)
    third = w.dispatcher.task(3)
    w.pump()
    assert idle.current is not None and idle.current[1] == 3  # the idle one, not the next
    held[1].callback("two")
    held[2].callback("three")
    w.pump()
    assert (results(second), results(third)) == ("two", "three")


def test_a_named_task_worker_and_one_that_does_not_exist() -> None:
    w = World(add_one)
    d = w.dispatcher.task(1, dstWorkerId=1)
    w.pump()
    assert results(d)[1] == 1
    bad = results(w.dispatcher.task(1, dstWorkerId=2))
    assert bad.check(NoTaskWorkersError) and "0..1" in str(bad.value)


def test_what_the_handler_raises_comes_back_with_its_type_and_message() -> None:
    def fails(server: Any, task_id: int, src: int, data: Any) -> Any:
        raise KeyError(f"no {data}")

    w = World(fails, count=1)
    d = w.dispatcher.task("thing")
    w.pump()
    error = results(d)
    assert error.check(TaskFailedError)
    assert error.value.type == "builtins.KeyError" and "no thing" in error.value.message
    assert str(error.value).startswith("task 1 raised builtins.KeyError")


@pytest.mark.parametrize("async_handler", [False, True])
def test_an_async_handler_and_a_result_pickle_refuses(async_handler: bool) -> None:
    async def lazy(server: Any, task_id: int, src: int, data: Any) -> Any:
        await defer.succeed(None)
        return lambda: data  # cannot be pickled

    def eager(server: Any, task_id: int, src: int, data: Any) -> Any:
        return lambda: data

    w = World(lazy if async_handler else eager, count=1)
    d = w.dispatcher.task(1)
    w.pump()
    error = results(d)
    assert error.check(TaskSerializationError)
    assert "result of task 1" in str(error.value) and "pickle" in str(error.value)
    ok = w.dispatcher.task(1)  # the task worker carries on
    w.services[0]._handler = add_one  # noqa: SLF001 - swap the handler for the next task
    w.pump()
    assert results(ok)[0] == 2


def test_data_too_large_or_unpicklable_is_refused_before_it_is_sent() -> None:
    w = World(add_one, count=1)
    big = results(w.dispatcher.task(b"x" * 5000))
    assert big.check(TaskSerializationError)
    assert "package_max_length=4096" in str(big.value)
    odd = results(w.dispatcher.task(lambda: 1))
    assert odd.check(TaskSerializationError) and "pickle" in str(odd.value)
    assert w.links[0].ct.value() == b""


def test_no_result_in_time_is_a_timeout_just_after_and_not_just_before() -> None:
    held: list[defer.Deferred[Any]] = []

    def slow(server: Any, task_id: int, src: int, data: Any) -> Any:
        held.append(defer.Deferred())
        return held[-1]

    w = World(slow, count=1)
    d = w.dispatcher.task(1, timeout=2.0)
    w.pump()
    fired: list[Any] = []
    d.addBoth(fired.append)
    w.clock.advance(1.99)
    assert not fired
    w.clock.advance(0.02)
    assert fired[0].check(TaskTimeoutError) and "2.0s" in str(fired[0].value)
    held[0].callback("late")  # the late result is dropped
    w.pump()
    assert w.dispatcher.pending == {} and w.links[0].client.outstanding == 0


def test_the_queue_bound_names_its_setting() -> None:
    w = World(lambda *a: defer.Deferred(), count=1, task_queue_max=2)
    w.dispatcher.task(1)
    w.dispatcher.task(2)
    full = results(w.dispatcher.task(3))
    assert full.check(TaskQueueFullError) and "task_queue_max=2" in str(full.value)


def test_a_task_worker_that_dies_fails_its_tasks_and_later_ones_go_elsewhere() -> None:
    w = World(lambda *a: defer.Deferred())
    a, b = w.dispatcher.task(1, dstWorkerId=0), w.dispatcher.task(2, dstWorkerId=1)
    w.pump()
    w.links[0].cut()
    died = results(a)
    assert died.check(TaskWorkerDiedError) and "task worker #0" in str(died.value)
    assert results_or_none(b) is None  # still running on #1
    later = w.dispatcher.task(5)
    w.pump()
    assert [pickle.loads(item[3]) for item in w.services[1].queue] == [5]  # queued on #1
    assert results_or_none(later) is None


def test_a_draining_task_worker_hands_its_queued_tasks_to_the_replacement() -> None:
    runs: list[tuple[int, Any]] = []
    held: list[defer.Deferred[Any]] = []

    def recorded(server: Any, task_id: int, src: int, data: Any) -> Any:
        runs.append((server.taskWorkerId, data))
        if data == "slow":
            held.append(defer.Deferred())
            return held[-1]
        return data

    w = World(recorded, count=1)
    slow = w.dispatcher.task("slow")
    queued = [w.dispatcher.task(i) for i in range(5)]
    w.pump()
    old = w.services[0]
    assert old.current is not None and len(old.queue) == 5
    # the replacement connects first (the master announces it), then the old one drains
    new = TaskWorkerService(w.config, index=0, reactor=w.clock, handler=recorded)  # type: ignore[arg-type]
    w.services.append(new)
    w.links.append(Link(w.dispatcher, new, 0))
    drained = old.drain(final=False)
    w.pump()
    assert [r for r in map(results_or_none, queued)] == [0, 1, 2, 3, 4]
    assert not drained.called  # the slow task still runs there
    held[0].callback("done")
    w.pump()
    assert results(slow) == "done" and drained.called
    assert sorted(runs, key=str) == sorted([(0, "slow"), *[(0, i) for i in range(5)]], key=str)
    assert len(runs) == 6  # each ran once
    assert old.taskCount == 1 and new.taskCount == 5


def test_tasks_sent_after_draining_began_come_back_and_wait_for_a_task_worker() -> None:
    w = World(add_one, count=1)
    old = w.services[0]
    old.drain(final=False)
    d = w.dispatcher.task(1)  # crosses the DRAINING on the wire
    w.pump()
    assert results_or_none(d) is None and len(w.dispatcher.backlog) == 1
    w.add(0, add_one)  # the replacement arrives: the backlog goes to it
    w.pump()
    assert results(d)[0] == 2


def test_finish_hook_sees_each_result_first() -> None:
    seen: list[Any] = []
    w = World(add_one, count=1)
    w.dispatcher.server = "srv"
    w.dispatcher.finish = lambda server, task_id, value: seen.append((server, task_id, value[0]))
    d = w.dispatcher.task(1)
    w.pump()
    assert seen == [("srv", 1, 2)] and results(d)[0] == 2


def test_frames_any_split_and_a_head_over_the_limit() -> None:
    data = frame(TASK, 7, 1, pickle.dumps("x")) + frame(RESULT, 7, 3, b"")
    reader = FrameReader(100)
    got = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert [(f.kind, f.taskId, f.number) for f in got] == [(TASK, 7, 1), (RESULT, 7, 3)]
    with pytest.raises(FrameTooLargeError):
        FrameReader(100).feed(frame(TASK, 1, 0, os.urandom(101))[:20])


@pytest.mark.parametrize(
    ("settings", "events", "message"),
    [
        ({"task_worker_num": 2}, {}, "needs [events] task"),
        ({}, {"task": "m:f"}, "task_worker_num = 0"),
        ({"task_worker_num": 1, "worker_num": 0}, {"task": "m:f"}, "needs worker_num >= 1"),
    ],
)
def test_config_errors(settings: dict[str, Any], events: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"server": {"type": "http", "app": "m:f"}, "settings": settings,
                      "events": events})  # fmt: skip
