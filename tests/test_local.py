"""Green-thread-local storage."""

from __future__ import annotations

import gc
import weakref

import greenlet
import pytest

import greenline
from greenline._core.threadpool import to_thread
from greenline.local import local


def test_each_green_thread_sees_its_own_attributes():
    data = local()
    data.x = "main"

    def worker(n):
        assert not hasattr(data, "x")
        data.x = n
        greenline.sleep(0)
        return data.x

    tasks = [greenline.spawn(worker, n) for n in range(20)]
    assert [t.get() for t in tasks] == list(range(20))
    assert data.x == "main"


def test_subclass_init_reruns_per_green_thread():
    calls = []

    class Settings(local):
        default = "class attribute"

        def __init__(self, start, step=1):
            calls.append(start)
            self.value = start
            self.step = step

        @property
        def doubled(self):
            return self.value * 2

        def bump(self):
            self.value += self.step
            return self.value

    s = Settings(10, step=5)
    s.bump()
    assert s.value == 15 and s.doubled == 30
    assert greenline.spawn(lambda: (s.value, s.bump(), s.default)).get() == (10, 15, "class attribute")
    assert s.value == 15
    assert calls == [10, 10]


def test_init_args_need_an_init():
    with pytest.raises(TypeError):
        local(1)


def test_dict_delattr_and_missing():
    data = local()
    data.a = 1
    assert data.__dict__ == {"a": 1}
    del data.a
    with pytest.raises(AttributeError):
        data.a  # noqa: B018
    with pytest.raises(AttributeError):
        del data.a
    with pytest.raises(AttributeError):
        data.__dict__ = {}
    assert greenline.spawn(lambda: data.__dict__).get() == {}


def test_data_descriptor_and_getattr_hook():
    class WithProp(local):
        stored = None

        @property
        def prop(self):
            return "computed"

        @prop.setter
        def prop(self, value):
            self.stored = value

        def __getattr__(self, name):
            return f"fallback:{name}"

    w = WithProp()
    w.prop = 5
    assert w.prop == "computed" and w.stored == 5
    assert w.anything == "fallback:anything"


def test_10000_finished_green_threads_leave_nothing_behind():
    data = local()
    impl = object.__getattribute__(data, "_local__impl")

    class Payload:
        pass

    refs = []

    def worker():
        payload = Payload()
        refs.append(weakref.ref(payload))
        data.payload = payload
        greenline.sleep(0)

    tasks = [greenline.spawn(worker) for _ in range(10_000)]
    greenline.joinall(tasks)
    # The task objects are still referenced here: the data must go anyway.
    assert len(impl.dicts) == 1  # only this (main) green thread's
    assert all(r() is None for r in refs)
    del tasks
    gc.collect()
    assert len(impl.dicts) == 1


def test_raw_greenlet_data_freed_with_the_greenlet():
    data = local()
    impl = object.__getattribute__(data, "_local__impl")

    def body():
        data.x = object()

    g = greenlet.greenlet(body)
    g.switch()
    assert g.dead and len(impl.dicts) == 2
    del g
    gc.collect()
    assert len(impl.dicts) == 1


def test_local_itself_is_collectable():
    data = local()
    ref = weakref.ref(data)

    def worker(r):
        r().x = 1
        greenline.sleep(0.01)

    t = greenline.spawn(worker, ref)
    greenline.sleep(0)
    del data
    gc.collect()
    assert ref() is None  # a running green thread does not keep it alive
    t.join()


def test_os_threads_have_their_own_data():
    data = local()
    data.x = "main"

    def in_thread():
        had = hasattr(data, "x")
        data.x = "thread"
        return had, data.x

    assert to_thread(in_thread) == (False, "thread")
    assert data.x == "main"
