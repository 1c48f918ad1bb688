"""Green-thread-local storage: ``local``, like ``threading.local`` but with one
set of attributes per green thread.

>>> import greenline
>>> from greenline.local import local
>>> data = local()
>>> def worker(n):
...     data.n = n
...     greenline.sleep(0.01)   # others run and set their own data.n
...     return data.n
>>> [t.get() for t in [greenline.spawn(worker, n) for n in range(3)]]
[0, 1, 2]

A green thread's attributes are dropped when it finishes (a task's, at once;
any other greenlet's, when it is freed), so finished green threads leave
nothing behind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.task import Task

__all__ = ["local"]

_MISSING: Any = object()


class _LocalImpl:
    """The per-green-thread dictionaries of one ``local`` object, keyed by
    ``id(greenlet)``.  An entry is removed by the green thread's finish link
    (tasks) or by a weak reference callback when the greenlet is freed, so an
    id is never reused while its entry exists."""

    __slots__ = ("dicts", "args", "kwargs", "__weakref__")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.dicts: dict[int, tuple[weakref.ref[greenlet], dict[str, Any]]] = {}
        self.args = args
        self.kwargs = kwargs

    def create(self, g: greenlet) -> dict[str, Any]:
        key = id(g)
        cleanup = _cleanup(weakref.ref(self), key)
        d: dict[str, Any] = {}
        self.dicts[key] = (weakref.ref(g, cleanup), d)
        if isinstance(g, Task) and not g.dead:
            # The data goes when the task finishes, even if the task object
            # is kept (a pool, a list of results).
            g.rawlink(cleanup)
        return d


def _cleanup(impl_ref: weakref.ref[_LocalImpl], key: int) -> Callable[[object], None]:
    # Holds the local only weakly: a green thread must not keep it alive.
    def cleanup(_obj: object) -> None:
        impl = impl_ref()
        if impl is not None:
            impl.dicts.pop(key, None)
    return cleanup


def _impl(self: local) -> _LocalImpl:
    return object.__getattribute__(self, "_local__impl")  # type: ignore[no-any-return]


def _get_dict(self: local) -> dict[str, Any]:
    impl = _impl(self)
    g = getcurrent()
    entry = impl.dicts.get(id(g))
    if entry is not None:
        return entry[1]
    d = impl.create(g)
    init = type(self).__init__
    if init is not object.__init__:
        # A green thread's first touch re-runs __init__, as threading.local
        # does for a new thread.
        try:
            init(self, *impl.args, **impl.kwargs)
        except BaseException:
            impl.dicts.pop(id(g), None)
            raise
    return d


def _type_lookup(cls: type, name: str) -> Any:
    for base in cls.__mro__:
        attrs = base.__dict__
        if name in attrs:
            return attrs[name]
    return _MISSING


class local:
    """An object whose attributes are private to each green thread.

    Subclass it to give every green thread defaults: ``__init__`` runs again,
    with the constructor's arguments, the first time each green thread
    touches the object.

    >>> import greenline
    >>> from greenline.local import local
    >>> class Counter(local):
    ...     def __init__(self, start):
    ...         self.value = start
    >>> c = Counter(10)
    >>> c.value = 99
    >>> greenline.spawn(lambda: c.value).get()   # a fresh green thread
    10
    >>> c.value
    99
    """

    __slots__ = ("_local__impl", "__weakref__")

    def __new__(cls, *args: Any, **kwargs: Any) -> local:
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl(args, kwargs)
        object.__setattr__(self, "_local__impl", impl)
        # The creating green thread's dictionary; the constructor call that
        # is under way runs __init__ on it.
        impl.create(getcurrent())
        return self

    def __getattribute__(self, name: str) -> Any:
        d = _get_dict(self)
        if name == "__dict__":
            return d
        cls = type(self)
        attr = _type_lookup(cls, name)
        if attr is not _MISSING:
            tp = type(attr)
            if hasattr(tp, "__set__") or hasattr(tp, "__delete__"):
                return tp.__get__(attr, self, cls)
        try:
            return d[name]
        except KeyError:
            pass
        if attr is not _MISSING:
            get = getattr(type(attr), "__get__", None)
            return attr if get is None else get(attr, self, cls)
        raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(f"{type(self).__name__!r} object attribute '__dict__' is read-only")
        d = _get_dict(self)
        attr = _type_lookup(type(self), name)
        if attr is not _MISSING:
            setter = getattr(type(attr), "__set__", None)
            if setter is not None:
                setter(attr, self, value)
                return
        d[name] = value

    def __copy__(self) -> local:
        """A new local whose calling green thread's attributes are a
        shallow copy of this one's (other green threads start afresh)."""
        impl = object.__getattribute__(self, "_local__impl")
        d = _get_dict(self)
        new = object.__new__(type(self))
        new_impl = _LocalImpl(impl.args, impl.kwargs)
        object.__setattr__(new, "_local__impl", new_impl)
        new_impl.create(getcurrent()).update(d)
        # A subclass's slots are per object, not per green thread: copied too.
        for cls in type(self).__mro__:
            if cls is local:
                break
            slots = cls.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                attr = cls.__dict__.get(name)
                if attr is None or not hasattr(type(attr), "__set__"):
                    continue
                try:
                    value = type(attr).__get__(attr, self, cls)
                except AttributeError:
                    continue
                type(attr).__set__(attr, new, value)
        return new

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(f"{type(self).__name__!r} object attribute '__dict__' is read-only")
        d = _get_dict(self)
        attr = _type_lookup(type(self), name)
        if attr is not _MISSING:
            deleter = getattr(type(attr), "__delete__", None)
            if deleter is not None:
                deleter(attr, self)
                return
        try:
            del d[name]
        except KeyError:
            raise AttributeError(name) from None
