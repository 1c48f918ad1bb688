"""Real frameworks on greenline.wsgi: Flask and Django apps, each skipped
with its reason when the framework is not installed (both are in the test
extra: ``pip install -e '.[test]'``).  In the slow suite, a Flask app served
by ``greenline serve --wsgi --procs 2`` under wrk: every response 200."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap

import pytest
from http_helpers import get, read_responses, request, serving
from serve_helpers import serving as serving_cli

from greenline import socket

FLASK_APP = textwrap.dedent("""
    from flask import Flask, Response, jsonify, request

    app = Flask(__name__)

    @app.get("/hello/<name>")
    def hello(name):
        return jsonify(name=name, greeting=f"Hello, {name}!")

    @app.post("/form")
    def form():
        return jsonify(dict(request.form, length=request.content_length))

    @app.get("/stream")
    def stream():
        return Response((f"line {i}\\n" for i in range(5)), mimetype="text/plain")
""")


@pytest.fixture(scope="module")
def flask_app(tmp_path_factory):
    pytest.importorskip("flask", reason="Flask is not installed (pip install flask, or the test extra)")
    ns: dict = {"__name__": "flask_test_app"}
    exec(compile(FLASK_APP, "flask_test_app.py", "exec"), ns)
    return ns["app"]


def test_a_flask_json_route(flask_app):
    with serving(flask_app) as server:
        (r,) = request(server, b"GET /hello/world HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"name": "world", "greeting": "Hello, world!"}


def test_flask_404_form_post_and_streaming_pipelined_on_one_connection(flask_app):
    body = b"a=1&b=two"
    with serving(flask_app) as server:
        c = socket.create_connection(server.address, timeout=5)
        c.sendall(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                  + b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        (missing, posted, streamed), closed = read_responses(c, 3)
        c.close()
    assert missing.status == 404
    assert posted.status == 200 and json.loads(posted.body) == {"a": "1", "b": "two", "length": len(body)}
    assert streamed.status == 200 and streamed.body == b"".join(b"line %d\n" % i for i in range(5))
    assert streamed.header("Transfer-Encoding") == "chunked"  # no Content-Length from a generator
    assert not closed


# -- Django -----------------------------------------------------------------------------------


def _hello(request, name):
    from django.http import JsonResponse

    return JsonResponse({"name": name, "method": request.method, "q": request.GET.get("q")})


urlpatterns: list = []


@pytest.fixture(scope="module")
def django_app():
    pytest.importorskip("django", reason="Django is not installed (pip install django, or the test extra)")
    import django
    from django.conf import settings

    if not settings.configured:
        # A whole project in a few lines: no apps, no database, this module
        # as the URL configuration.
        settings.configure(DEBUG=False, SECRET_KEY="test only", ALLOWED_HOSTS=["*"],
                           ROOT_URLCONF=__name__, MIDDLEWARE=[], INSTALLED_APPS=[],
                           USE_TZ=True)
        django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.urls import path

    urlpatterns[:] = [path("hello/<str:name>", _hello)]
    return get_wsgi_application()


def test_a_django_view_and_a_404(django_app):
    with serving(django_app) as server:
        c = socket.create_connection(server.address, timeout=5)
        c.sendall(b"GET /hello/django?q=1 HTTP/1.1\r\nHost: example.org\r\n\r\n"
                  b"GET /not/there HTTP/1.1\r\nHost: example.org\r\n\r\n")
        (view, missing), _ = read_responses(c, 2)
        c.close()
    assert view.status == 200 and view.header("Content-Type") == "application/json"
    assert json.loads(view.body) == {"name": "django", "method": "GET", "q": "1"}
    assert missing.status == 404


# -- under load -------------------------------------------------------------------------------


_WRK_REQUESTS = re.compile(r"(\d+) requests in")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_flask_under_wrk_on_two_processes_every_response_200(tmp_path):
    pytest.importorskip("flask", reason="Flask is not installed (pip install flask, or the test extra)")
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (the Debian package wrk)")
    (tmp_path / "flaskapp.py").write_text(FLASK_APP)
    for start in serving_cli(tmp_path):
        srv = start("--wsgi", "flaskapp:app", "--procs", "2")
        srv.wait_workers(2)
        # A first request through each code path before the clock starts.
        c = socket.create_connection(srv.address, timeout=10)
        c.sendall(get("/hello/warm"))
        (r,), _ = read_responses(c, 1)
        c.close()
        assert r.status == 200
        out = subprocess.run(["wrk", "-t1", "-c50", "-d3s", f"http://127.0.0.1:{srv.port}/hello/wrk"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        m = _WRK_REQUESTS.search(out.stdout)
        assert m and int(m.group(1)) > 100, out.stdout
        # wrk prints these two lines only when there is something to count.
        assert "Non-2xx or 3xx responses" not in out.stdout, out.stdout
        assert "Socket errors" not in out.stdout, out.stdout
        assert srv.terminate() == 0
        assert "Traceback" not in srv.logs()
