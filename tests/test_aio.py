"""The asyncio bridge: await_ from green threads, run_green from coroutines,
either side hosting the other, exceptions and cancellation crossing both
ways, all on one OS thread."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import greenline
from greenline import Timeout, aio, socket
from greenline._core.cancel import Cancelled, move_on_after
from greenline.event import Event


@pytest.fixture(autouse=True)
def _close_the_hubs_loop():
    yield
    aio.close_loop()


async def _square_later(i: int, delay: float = 0.01) -> tuple[int, int]:
    await asyncio.sleep(delay)
    return i * i, threading.get_ident()


# -- asyncio inside greenline ------------------------------------------------


def test_await_returns_the_result_and_raises_the_exception():
    assert aio.await_(_square_later(7))[0] == 49

    async def boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("from asyncio")

    with pytest.raises(KeyError, match="from asyncio"):
        aio.await_(boom())


def test_await_blocks_only_the_calling_green_thread():
    # The coroutine can only finish if another green thread runs meanwhile.
    loop = aio.get_loop()
    ticked = asyncio.Event()
    ticks: list[int] = []

    def ticker() -> None:
        for i in range(5):
            greenline.sleep(0.001)
            ticks.append(i)
        loop.call_soon_threadsafe(ticked.set)

    t = greenline.spawn(ticker)
    aio.await_(asyncio.wait_for(ticked.wait(), 10))
    assert ticks == [0, 1, 2, 3, 4]
    t.join()


def _wait_until(condition: object) -> None:
    while not condition:
        greenline.sleep(0.001)


def test_thousand_green_threads_await_concurrently_on_one_thread():
    me = threading.get_ident()
    inflight = peak = 0

    async def op(i: int) -> tuple[int, int]:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await _square_later(i)
        finally:
            inflight -= 1

    results: dict[int, tuple[int, int]] = {}

    def green(i: int) -> None:
        results[i] = aio.await_(op(i))
        assert threading.get_ident() == me

    tasks = [greenline.spawn(green, i) for i in range(1000)]
    greenline.joinall(tasks, timeout=30)
    assert all(t.successful() for t in tasks)
    assert results == {i: (i * i, me) for i in range(1000)}
    assert peak == 1000  # all in flight at once, not one after another


def test_the_hubs_loop_wakes_for_call_soon_from_a_green_thread():
    loop = aio.get_loop()
    fut = loop.create_future()
    greenline.spawn_later(0.01, lambda: loop.call_soon(fut.set_result, "woken"))
    assert aio.await_(fut) == "woken"


def test_idle_loop_ends_so_deadlocks_are_still_detected():
    aio.await_(asyncio.sleep(0))
    with pytest.raises(greenline.LoopExit):
        Event().wait()


def test_await_inside_a_coroutine_is_refused():
    async def wrong() -> None:
        aio.await_(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="use await"):
        aio.await_(wrong())


def test_context_variables_cross_the_bridge():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    def green() -> str:
        var.set("green")
        return aio.await_(read())

    assert greenline.spawn(green).get(timeout=5) == "green"

    async def main() -> str:
        var.set("async")
        return await aio.run_green(var.get)

    assert asyncio.run(main()) == "async"


# -- cancellation from the green side ---------------------------------------------


def test_killing_a_green_thread_cancels_its_asyncio_task():
    log: list[str] = []

    async def slow() -> None:
        log.append("started")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled")
            await asyncio.sleep(0.01)  # the coroutine's cleanup may await
            log.append("cleaned up")
            raise

    t = greenline.spawn(aio.await_, slow())
    _wait_until(log)
    t.kill(timeout=5)
    assert t.dead and t.successful()
    assert log == ["started", "cancelled", "cleaned up"]  # before kill() returned


def test_timeout_around_await_cancels_the_task():
    log: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            log.append("finally")

    with pytest.raises(Timeout):
        with Timeout(0.02):
            aio.await_(slow())
    assert log == ["finally"]


def test_cancel_scope_deadline_around_await():
    with move_on_after(0.02) as scope:
        aio.await_(asyncio.sleep(10))
    assert scope.cancelled_caught
    assert aio.await_(_square_later(3))[0] == 9  # the bridge still works


def test_asyncio_side_cancellation_reaches_the_green_thread():
    loop = aio.get_loop()
    holder: list[asyncio.Task[None]] = []

    async def victim() -> None:
        holder.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.sleep(10)

    t = greenline.spawn(aio.await_, victim())
    _wait_until(holder)
    loop.call_soon(holder[0].cancel)
    with pytest.raises(asyncio.CancelledError):
        t.get(timeout=5)


# -- greenline inside asyncio -------------------------------------------------------


def test_run_green_returns_and_raises_under_asyncio_run():
    def blocking(x: int) -> int:
        greenline.sleep(0.01)
        return x + 1

    def failing() -> None:
        greenline.sleep(0)
        raise ValueError("from a green thread")

    async def main() -> int:
        with pytest.raises(ValueError, match="from a green thread"):
            await aio.run_green(failing)
        return await aio.run_green(blocking, 41)

    assert asyncio.run(main()) == 42


def test_thousand_coroutines_run_green_concurrently_on_one_thread():
    me = threading.get_ident()
    inflight = peak = 0

    def blocking(i: int) -> tuple[int, int]:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            greenline.sleep(0.01)
            return -i, threading.get_ident()
        finally:
            inflight -= 1

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(aio.run_green(blocking, i) for i in range(1000)))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [(-i, me) for i in range(1000)]
    assert peak == 1000


def test_round_trips_both_ways_under_asyncio_run():
    # coroutine -> green thread -> coroutine, 1000 at once.
    me = threading.get_ident()

    def green(i: int) -> tuple[int, int]:
        value, ident = aio.await_(_square_later(i, 0.005))
        assert ident == threading.get_ident() == me
        return value, ident

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(aio.run_green(green, i) for i in range(1000)))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [(i * i, me) for i in range(1000)]


def test_cancelling_the_awaiting_task_kills_the_green_thread():
    log: list[str] = []

    def blocking() -> None:
        try:
            greenline.sleep(10)
        except greenline.GreenletExit:
            log.append("killed")
            raise
        finally:
            log.append("finally")

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.run_green(blocking), 0.02)
        assert log == ["killed", "finally"]  # it ended before we went on

    asyncio.run(main())


def test_green_thread_killed_elsewhere_cancels_the_awaiting_coroutine():
    async def main() -> None:
        started = asyncio.Event()
        tasks: list[greenline.Task] = []

        def blocking() -> None:
            tasks.append(greenline.getcurrent())  # type: ignore[arg-type]
            aio.get_loop().call_soon_threadsafe(started.set)
            greenline.sleep(10)

        waiter = asyncio.ensure_future(aio.run_green(blocking))
        await started.wait()
        await aio.run_green(tasks[0].kill)
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(asyncio.wait_for(main(), 10))


def test_green_threads_see_no_running_loop():
    def blocking() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    async def main() -> bool:
        return await aio.run_green(blocking)

    assert asyncio.run(main())


def test_neither_side_starves_the_other():
    # asyncio spins (always ready) while green threads need the hub to poll
    # their sockets: both must make progress, on one thread.
    a, b = socket.socketpair()
    spins = 0

    def ping_pong() -> int:
        done = 0
        for _ in range(200):
            a.sendall(b"x")
            assert b.recv(1) == b"x"
            done += 1
        return done

    async def spinner(done: asyncio.Future[int]) -> None:
        nonlocal spins
        while not done.done():
            spins += 1
            await asyncio.sleep(0)

    async def main() -> int:
        done = asyncio.ensure_future(aio.run_green(ping_pong))
        await asyncio.wait_for(spinner(done), 10)
        return await done

    try:
        assert asyncio.run(main()) == 200
        assert spins > 0
    finally:
        a.close()
        b.close()


# -- real IO both ways at once ---------------------------------------------------------


async def _upper_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(line.upper())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _green_upper_server(listener: socket.socket) -> None:
    def handle(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(100)
                if not chunk:
                    return
                buf += chunk
            conn.sendall(buf.upper())

    while True:
        conn, _ = listener.accept()
        greenline.spawn(handle, conn)


async def _asyncio_client(port: int, i: int, active: dict[str, int]) -> tuple[bytes, int]:
    active["asyncio"] += 1
    active["both"] = max(active["both"], min(active["asyncio"], active["green"]))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"async %d\n" % i)
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line, threading.get_ident()
    finally:
        active["asyncio"] -= 1


def _green_client(port: int, i: int, active: dict[str, int]) -> tuple[bytes, int]:
    active["green"] += 1
    active["both"] = max(active["both"], min(active["asyncio"], active["green"]))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"green %d\n" % i)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(100)
                assert chunk
                buf += chunk
        return buf, threading.get_ident()
    finally:
        active["green"] -= 1


N_IO = 1000  # connections each way, at once: about 4 * N_IO descriptors


@pytest.fixture
def _enough_descriptors():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * N_IO + 500
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.usefixtures("_enough_descriptors")
def test_open_connection_in_green_threads_and_green_sockets_in_coroutines_greenline_hosts(fd_count):
    me = threading.get_ident()
    active = {"asyncio": 0, "green": 0, "both": 0}
    listener = socket.create_server(("127.0.0.1", 0), backlog=N_IO * 2)
    gport = listener.getsockname()[1]
    server_task = greenline.spawn(_green_upper_server, listener)
    aserver = aio.await_(asyncio.start_server(_upper_handler, "127.0.0.1", 0, backlog=N_IO * 2))
    aport = aserver.sockets[0].getsockname()[1]

    async def green_clients_from_coroutines() -> list[tuple[bytes, int]]:
        return await asyncio.gather(*(aio.run_green(_green_client, aport, i, active)
                                      for i in range(N_IO)))

    try:
        # asyncio.open_connection from green threads...
        green_side = [greenline.spawn(lambda i=i: aio.await_(_asyncio_client(gport, i, active)))
                      for i in range(N_IO)]
        # ...while coroutines use greenline sockets, at the same time.
        async_side = greenline.spawn(aio.await_, green_clients_from_coroutines())
        greenline.joinall(green_side + [async_side], timeout=30)
        assert [t.get(block=False) for t in green_side] == [
            (b"ASYNC %d\n" % i, me) for i in range(N_IO)]
        assert async_side.get(block=False) == [(b"GREEN %d\n" % i, me) for i in range(N_IO)]
        assert active["both"] > 0  # the two directions really overlapped
    finally:
        aserver.close()
        aio.await_(aserver.wait_closed())
        server_task.kill()
        listener.close()
        aio.close_loop()
    fd_count()


@pytest.mark.usefixtures("_enough_descriptors")
def test_open_connection_in_green_threads_and_green_sockets_in_coroutines_asyncio_hosts():
    me = threading.get_ident()
    active = {"asyncio": 0, "green": 0, "both": 0}

    async def main() -> None:
        aio.get_loop()  # the running loop becomes the hub's: spawned green threads run
        listener = socket.create_server(("127.0.0.1", 0), backlog=N_IO * 2)
        gport = listener.getsockname()[1]
        server_task = greenline.spawn(_green_upper_server, listener)
        aserver = await asyncio.start_server(_upper_handler, "127.0.0.1", 0, backlog=N_IO * 2)
        aport = aserver.sockets[0].getsockname()[1]
        try:
            results = await asyncio.gather(
                *(aio.run_green(lambda i=i: aio.await_(_asyncio_client(gport, i, active)))
                  for i in range(N_IO)),
                *(aio.run_green(_green_client, aport, i, active) for i in range(N_IO)))
        finally:
            aserver.close()
            await aserver.wait_closed()
            await aio.run_green(server_task.kill)
            listener.close()
        assert results[:N_IO] == [(b"ASYNC %d\n" % i, me) for i in range(N_IO)]
        assert results[N_IO:] == [(b"GREEN %d\n" % i, me) for i in range(N_IO)]
        assert active["both"] > 0

    asyncio.run(asyncio.wait_for(main(), 30))


_PATCHED = textwrap.dedent("""
    from greenline import monkey
    monkey.patch_all()
    import asyncio, socket, threading, time
    from greenline import aio
    real_ident = monkey.get_original("_thread", "get_ident")

    def serve(listener):
        def handle(conn):
            with conn:
                conn.sendall(conn.recv(100).upper())
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,)).start()

    def blocking_client(port, i):
        time.sleep(0.01)                       # patched: parks one green thread
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"patched %d" % i)
            return s.recv(100), real_ident()

    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(500)
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        port = listener.getsockname()[1]
        out = await asyncio.gather(*(aio.run_green(blocking_client, port, i) for i in range(300)))
        assert out == [(b"PATCHED %d" % i, real_ident()) for i in range(300)], out[:3]
        print("ok", len(out))

    asyncio.run(asyncio.wait_for(main(), 30))
""")


def test_patched_stdlib_socket_from_coroutines_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", _PATCHED], capture_output=True, text=True,
                          timeout=50, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", "300"]


def test_cancelled_green_scope_inside_run_green():
    def blocking() -> str:
        with move_on_after(0.01) as scope:
            greenline.sleep(10)
        return "moved on" if scope.cancelled_caught else "not cut"

    async def main() -> str:
        return await aio.run_green(blocking)

    assert asyncio.run(main()) == "moved on"


def test_green_exception_that_is_a_base_exception_reaches_the_coroutine():
    from greenline._core.cancel import CancelScope

    def blocking() -> None:
        # A cancellation of a scope the green thread does not own escapes it.
        scope = CancelScope()
        scope.cancel()
        scope._enter(None)
        try:
            greenline.sleep(10)
        finally:
            scope._leave()

    async def main() -> None:
        await aio.run_green(blocking)

    with pytest.raises(Cancelled):
        asyncio.run(main())


def test_call_soon_threadsafe_from_another_os_thread_wakes_the_hubs_loop():
    loop = aio.get_loop()
    fut = loop.create_future()

    def other_thread() -> None:
        import time

        time.sleep(0.02)  # a real OS thread: the hub is parked in epoll meanwhile
        loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

    th = threading.Thread(target=other_thread)
    th.start()
    try:
        assert aio.await_(asyncio.wait_for(fut, 10)) == th.ident
    finally:
        th.join(5)


def test_failing_sibling_cancels_green_threads_waiting_in_await():
    from greenline._core.taskgroup import TaskGroup

    unwound: list[int] = []

    async def slow(i: int) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            unwound.append(i)

    def fail() -> None:
        greenline.sleep(0.02)
        raise ValueError("sibling failed")

    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            waiters = [tg.spawn(aio.await_, slow(i)) for i in range(20)]
            tg.spawn(fail)
    assert [str(e) for e in info.value.exceptions] == ["sibling failed"]
    assert sorted(unwound) == list(range(20))  # every asyncio task was cancelled
    assert all(isinstance(w.exception, Cancelled) for w in waiters)


def test_call_soon_restarts_the_hubs_loop_after_it_went_idle():
    loop = aio.get_loop()
    aio.await_(asyncio.sleep(0))
    while loop.is_running():
        greenline.sleep(0.001)  # idle: its green thread ends
    got: list[str] = []
    loop.call_soon(got.append, "ran")
    _wait_until(got)
    assert got == ["ran"]
