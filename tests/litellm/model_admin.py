"""A LiteLLM proxy's model management without its database, for `tests/sync.rs`.

The real proxy keeps models added through its API in PostgreSQL through Prisma, whose query
engine is a binary downloaded from Prisma's servers at first use; this machine reaches only
the package registries, so that proxy cannot start with a database here. This stand-in keeps
everything of LiteLLM that a sync's outcome depends on and replaces only the database:

- every request body is validated by the proxy's own request models (`Deployment` for
  `/model/new`, `updateDeployment` for `/model/update`, `ModelInfoDelete` for
  `/model/delete`), and `/model/update` merges `litellm_params` as the proxy does (a field
  given replaces the stored one, the rest is kept);
- `/model/info` answers the proxy's shape (`{"data": [...]}`, `model_info.db_model`, the
  key left out);
- `/chat/completions` is routed by LiteLLM's own `Router` with `simple-shuffle` over the
  stored deployments, rebuilt after every change as the proxy reloads its router from the
  database, and answers `x-litellm-model-id` as the proxy does.

Usage: python model_admin.py PORT MASTER_KEY [DEPLOYMENTS_JSON]
DEPLOYMENTS_JSON: deployments present at start (as a user added them by hand).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from litellm import Router
from litellm.proxy._types import ModelInfoDelete
from litellm.types.router import Deployment, updateDeployment

PORT = int(sys.argv[1])
MASTER_KEY = sys.argv[2]

LOCK = threading.Lock()
MODELS = {}  # id -> {"model_name", "litellm_params", "model_info"}
ROUTER = [None]


def rebuild():
    model_list = [json.loads(json.dumps(m)) for m in MODELS.values()]
    ROUTER[0] = Router(model_list=model_list, routing_strategy="simple-shuffle") if model_list else None


def stored(deployment):
    """A validated deployment as the proxy stores it."""
    dumped = deployment.model_dump(exclude_none=True)
    info = dict(dumped["model_info"])
    info["db_model"] = True
    return {
        "model_name": dumped["model_name"],
        "litellm_params": dumped["litellm_params"],
        "model_info": info,
    }


if len(sys.argv) > 3:
    for entry in json.loads(open(sys.argv[3]).read()):
        model = stored(Deployment(**entry))
        MODELS[model["model_info"]["id"]] = model
rebuild()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("model_admin: " + (fmt % args) + "\n")

    def answer(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind):
        self.answer(status, {"error": {"message": message, "type": kind, "param": None, "code": str(status)}})

    def authorized(self):
        if self.headers.get("authorization") == "Bearer " + MASTER_KEY:
            return True
        self.error(401, "Authentication Error, invalid proxy server token passed.", "auth_error")
        return False

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        if self.path.startswith("/health/liveliness"):
            return self.answer(200, "I'm alive!")
        if not self.authorized():
            return
        if self.path.split("?")[0] in ("/model/info", "/v1/model/info"):
            with LOCK:
                data = []
                for model in MODELS.values():
                    params = {k: v for k, v in model["litellm_params"].items() if k != "api_key"}
                    data.append({**model, "litellm_params": params})
            return self.answer(200, {"data": data})
        self.error(404, "Not Found", "not_found_error")

    def do_POST(self):
        if not self.authorized():
            return
        path = self.path.split("?")[0]
        try:
            body = self.body()
        except ValueError as err:
            return self.error(400, f"invalid JSON: {err}", "bad_request_error")
        try:
            if path == "/model/new":
                model = stored(Deployment(**body))
                with LOCK:
                    if model["model_info"]["id"] in MODELS:
                        return self.error(400, "Unique constraint failed on the fields: (`model_id`)", "bad_request_error")
                    MODELS[model["model_info"]["id"]] = model
                    rebuild()
                return self.answer(200, {"model_id": model["model_info"]["id"], **model})
            if path == "/model/update":
                update = updateDeployment(**body)
                if update.model_info is None or update.model_info.id is None:
                    return self.error(400, "model_info.id not provided", "bad_request_error")
                if update.litellm_params is None:
                    return self.error(400, "litellm_params not provided", "bad_request_error")
                model_id = update.model_info.id
                with LOCK:
                    model = MODELS.get(model_id)
                    if model is None:
                        return self.error(400, "model not found", "bad_request_error")
                    params = dict(model["litellm_params"])
                    params.update(update.litellm_params.model_dump(exclude_none=True))
                    model["litellm_params"] = params
                    if update.model_name:
                        model["model_name"] = update.model_name
                    rebuild()
                return self.answer(200, {"model_id": model_id, **model})
            if path == "/model/delete":
                model_id = ModelInfoDelete(**body).id
                with LOCK:
                    if MODELS.pop(model_id, None) is None:
                        return self.error(404, f"Model with id={model_id} not found in db", "not_found_error")
                    rebuild()
                return self.answer(200, {"message": f"Model: {model_id} deleted successfully"})
            if path in ("/chat/completions", "/v1/chat/completions"):
                with LOCK:
                    router = ROUTER[0]
                if router is None:
                    return self.error(400, "no deployments", "bad_request_error")
                response = router.completion(model=body["model"], messages=body["messages"])
                model_id = response._hidden_params.get("model_id") or ""
                return self.answer(200, response.model_dump(), {"x-litellm-model-id": model_id})
        except Exception as err:  # the proxy answers every failure as a JSON error too
            return self.error(400, f"{type(err).__name__}: {err}", "bad_request_error")
        self.error(404, "Not Found", "not_found_error")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
