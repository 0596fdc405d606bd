"""The HTTP side of ``kit serve``: a threaded stdlib server on 127.0.0.1 by default.

Bad input never takes the server down: a body over ``serve.max_body_bytes`` gets 413
(unread), malformed JSON 400, an unknown model 404 naming the known ones, a missing or
wrong API key 401; anything unexpected is a 500 with its message, and the next request
is served as usual.
"""

from __future__ import annotations

import hmac
import traceback
from http.server import ThreadingHTTPServer

from kit.stages.serve.openai_api import ApiError, JsonHandler

ROUTES = {"/v1/chat/completions": True, "/v1/completions": False}


def error_body(e: ApiError) -> dict:
    return {"error": {"message": e.message, "type": e.kind, "param": None, "code": e.code}}


def make_handler(app, api_key: str | None, max_body_bytes: int):
    class Handler(JsonHandler):
        def authorise(self) -> None:
            given = self.headers.get("Authorization", "")
            if api_key and not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                raise ApiError(401, "missing or wrong API key; expected 'Authorization: Bearer <serve.api_key>'",
                               "authentication_error")

        def handle_api(self, work) -> None:
            try:
                payload, headers = work()
                self.reply(200, payload, headers)
            except ApiError as e:
                self.close_connection = True  # the body may be unread (401, 411): start afresh
                self.reply(e.code, error_body(e))
            except Exception as e:  # a bug or a model failure: this request fails, the server goes on
                traceback.print_exc()
                self.close_connection = True
                self.reply(500, error_body(ApiError(500, f"internal error: {type(e).__name__}: {e}", "server_error")))

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                return self.reply(200, {"status": "ok", "requests": app.engine.rows, "generate_calls": app.engine.batches})

            def work():
                self.authorise()
                if path == "/v1/models":
                    return app.models(), {}
                raise ApiError(404, f"no endpoint GET {path}; expected /v1/models or /health", "not_found")

            self.handle_api(work)

        def do_POST(self):
            path = self.path.split("?")[0]

            def work():
                self.authorise()
                if path not in ROUTES:
                    raise ApiError(404, f"no endpoint POST {path}; expected one of {sorted(ROUTES)}", "not_found")
                return app.complete(self.read_json(), chat=ROUTES[path])

            self.handle_api(work)

    Handler.max_body_bytes = max_body_bytes
    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True


def make_server(app, host: str, port: int, api_key: str | None, max_body_bytes: int) -> Server:
    return Server((host, port), make_handler(app, api_key, max_body_bytes))
