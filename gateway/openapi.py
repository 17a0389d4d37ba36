"""The OpenAPI document (``/schema/openapi.json``), finished in one place so that it states exactly
what the gateway accepts and answers: other programs are generated and fuzzed from it.

Litestar builds the paths and parameters from the route handlers; :func:`finish` then

- replaces every body schema with msgspec's JSON Schema of the same type (the type that validates
  the body): objects that refuse unknown fields say ``additionalProperties: false``, and lengths,
  patterns, bounds and nullability are the ones enforced;
- documents every error answer as ``application/problem+json`` (:class:`gateway.errors.Problem`),
  403 where a guard refuses, the ``RateLimit`` fields on every counted answer and ``Retry-After``
  where it is sent;
- documents the event stream as ``text/event-stream`` with its event names;
- adds OpenAPI links, so that a client (or a fuzzer's stateful phase) knows where the ids an
  operation needs come from: register -> login -> submit -> result and events, problems -> grade
  -> progress.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.response import Response
from litestar.routes import HTTPRoute

from gateway.errors import PROBLEM_MEDIA_TYPE, Problem
from gateway.guards import staff_only
from gateway.security import QUOTA_EXEMPT
from schemas.executions import STUDENT_KINDS

REF = "#/components/schemas/{name}"
ERROR_STATUSES = ("400", "401", "404", "409", "410", "412", "413", "422", "429", "500", "503")
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": "The quotas this request counted against (draft-ietf-httpapi-ratelimit-headers)",
    "RateLimit": "The tightest of them: its name, requests remaining (`r`) and seconds to its reset (`t`)",
}
RETRY_AFTER = "Seconds to wait before trying again"

# Operations by their handler's name (the route ``name`` or function name), for links.
REGISTER, LOGIN = "register", "login"
SUBMIT, GRADE, RESULT, EVENTS = "submit", "submit_grade", "execution:result", "execution:events"
PROBLEM, SESSIONS, SESSION, ATTEMPT, COMPLETE = "problem", "sessions", "session", "attempt", "complete"
CREATE, REPLACE, DELETE, EDIT, ALL_TESTS = "create", "replace", "delete_problem", "edit_view", "all_tests"
ADD_TEST, REPLACE_TEST, DELETE_TEST = "add_test", "replace_test", "delete_test"

JOB = {"path.job_id": "$response.body#/jobId"}
CREATED = {"path.problem_id": "$response.body#/id"}
CREATED_TEST = {**CREATED, "path.test_id": "$response.body#/tests/0/id"}
# (source operation, status) -> {link name: (target operation, parameters, request body)}. Sources
# whose answer always has the value: a list that may be empty (a page past the end) is no source.
# Runtime expressions: https://spec.openapis.org/oas/v3.1.0#runtime-expressions.
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str], Any]]] = {
    (REGISTER, "201"): {
        "SignIn": (LOGIN, {}, {"email": "$request.body#/email", "password": "$request.body#/password"}),
    },
    (LOGIN, "200"): {
        "Submit": (SUBMIT, {"header.Authorization": "Bearer {$response.body#/accessToken}"}, None),
    },
    (SUBMIT, "202"): {"Result": (RESULT, JOB, None), "Events": (EVENTS, JOB, None)},
    (GRADE, "202"): {"Result": (RESULT, JOB, None), "Events": (EVENTS, JOB, None)},
    (SESSIONS, "200"): {
        "Session": (SESSION, {"path.session_id": "$response.body#/0/id"}, None),
        "Complete": (COMPLETE, {}, {"sessionId": "$response.body#/0/id"}),
    },
    (SESSION, "200"): {"Problem": (PROBLEM, {"path.problem_id": "$response.body#/problems/0/id"}, None)},
    (PROBLEM, "200"): {
        "Grade": (GRADE, {}, {"problemId": "$response.body#/id", "code": "print(input())"}),
        "Attempt": (ATTEMPT, {}, {"problemId": "$response.body#/id", "code": "print(input())"}),
    },
    (ADD_TEST, "201"): {
        "ReplaceTest": (
            REPLACE_TEST,
            {"path.problem_id": "$request.path.problem_id", "path.test_id": "$request.body#/id"},
            None,
        ),
        "DeleteTest": (
            DELETE_TEST,
            {"path.problem_id": "$request.path.problem_id", "path.test_id": "$request.body#/id"},
            None,
        ),
    },
    (CREATE, "201"): {
        "Problem": (PROBLEM, CREATED, None),
        "Edit": (EDIT, CREATED, None),
        "AllTests": (ALL_TESTS, CREATED, None),
        "Replace": (REPLACE, CREATED, None),
        "Delete": (DELETE, CREATED, None),
        "AddTest": (ADD_TEST, CREATED, None),
        "ReplaceTest": (REPLACE_TEST, CREATED_TEST, None),
        "DeleteTest": (DELETE_TEST, CREATED_TEST, None),
    },
}

# Answers that are not problem documents.
NOT_PROBLEMS = {("ready", "503")}

NULL = {"type": "null"}
# Schemas the types cannot say: checked by the service, stated here.
EXACTLY_ONE = {
    "CompleteRequest": {
        "oneOf": [
            {
                "required": ["problemId"],
                "properties": {"problemId": {"type": "integer"}, "sessionId": {"type": "null"}},
            },
            {"required": ["sessionId"], "properties": {"sessionId": {"type": "string"}, "problemId": {"type": "null"}}},
        ],
    },
}


# The repository's curriculum (what `coderunner seed` loads) gives the examples: real ids, so that
# a client author can try them and a fuzzer's boundary cases start from data that exists.
EXAMPLE_PROBLEM = ("kids", "01-printing", "01-hello.toml")
EXAMPLE_SESSION = "kids-printing"


# Path parameters' examples, from the same problem (filled in by _examples).
_PARAMETERS: dict[str, Any] = {}


def _examples() -> dict[str, dict[str, Any]]:
    """Schema name -> {property: example} (and ``""``: an example of the whole body)."""
    from curriculum.files import CONTENT, load_problem
    from gateway.problems.models import ProblemIn

    level, folder, name = EXAMPLE_PROBLEM
    problem = load_problem(CONTENT / level / folder / name, level, EXAMPLE_SESSION)
    fields = SimpleNamespace(**msgspec.structs.asdict(problem))
    body = msgspec.to_builtins(msgspec.convert(fields, ProblemIn, from_attributes=True))
    code = "print('Hello, ' + input() + '!')"
    _PARAMETERS.update(problem_id=problem.id, test_id=problem.tests[0].id, session_id=EXAMPLE_SESSION)
    return {
        "SubmitRequest": {"code": code, "problemId": problem.id},
        "GradeRequest": {"code": code, "problemId": problem.id},
        "AttemptRequest": {"code": code, "problemId": problem.id},
        "CompleteRequest": {"sessionId": EXAMPLE_SESSION},
        "ProblemIn": {"": body},
        "ProblemTest": {"": body["tests"][0]},
        "ReplacedTest": {"": {k: v for k, v in body["tests"][0].items() if k != "id"}},
    }


def finish(app: Litestar) -> None:
    """Build the document once, at start-up, and have Litestar serve it (JSON, YAML and the UI)."""
    from litestar._openapi.plugin import OpenAPIPlugin  # the one that serves /schema/*

    document = finished_document(app)
    plugin = app.plugins.get(OpenAPIPlugin)
    # Its cache of the rendered document: set, Litestar serves this one from then on.
    plugin._openapi_schema = document


def finished_document(app: Litestar) -> dict[str, Any]:
    document = copy.deepcopy(app.openapi_schema.to_schema())
    operations = dict(_operations(app, document))
    _replace_schemas(document, [t for handler, _, _ in operations.values() for t in _types_of(handler)])
    for (path, method), (handler, name, operation) in operations.items():
        _absent_is_not_null(operation)
        # Not on deletions: a client trying the examples would delete the example problem.
        for parameter in operation.get("parameters", ()) if method != "delete" else ():
            if parameter.get("in") == "path" and parameter.get("name") in _PARAMETERS:
                parameter.setdefault("schema", {})["examples"] = [_PARAMETERS[parameter["name"]]]
        _document_answers(path, handler, name, operation)
        if handler.name == EVENTS:
            _document_event_stream(operation)
    _add_links(operations)
    return document


def _operations(
    app: Litestar, document: dict[str, Any]
) -> Iterator[tuple[tuple[str, str], tuple[HTTPRouteHandler, str, dict[str, Any]]]]:
    paths = document.get("paths", {})
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            for method in handler.http_methods:
                operation = paths.get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    name = handler.name or handler.handler_name
                    yield (route.path_format, method.lower()), (handler, name, operation)


def _types_of(handler: HTTPRouteHandler) -> Iterator[Any]:
    signature = handler.parsed_fn_signature
    returned = signature.return_type.annotation
    if typing.get_origin(returned) is Response:
        returned = typing.get_args(returned)[0]
    yield returned
    if "data" in signature.parameters:
        yield signature.parameters["data"].annotation


def _msgspec_types(types: list[Any]) -> list[Any]:
    found = []
    for t in types:
        try:
            msgspec.json.schema(t)
        except TypeError:  # a File, a ServerSentEvent, None...
            continue
        found.append(t)
    return found


def _replace_schemas(document: dict[str, Any], types: list[Any]) -> None:
    """Every component msgspec knows, as msgspec states it (the type that validates is the one that
    documents), plus the problem document."""
    _, components = msgspec.json.schema_components([*_msgspec_types(types), Problem], ref_template=REF)
    _any_items(components)
    for name, extra in EXACTLY_ONE.items():
        components[name] = {**components[name], **extra}
    for name, examples in _examples().items():
        for field, example in examples.items():
            target = components[name] if field == "" else components[name]["properties"][field]
            target["examples"] = [example]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)


def _absent_is_not_null(operation: dict[str, Any]) -> None:
    """An optional header, query or cookie parameter is absent or a string: never ``null``.

    Litestar documents ``str | None = None`` as "string or null", which a client would send as the
    text ``null``.
    """
    for parameter in operation.get("parameters", ()):
        schema = parameter.get("schema", {})
        for key in ("oneOf", "anyOf"):
            options = [option for option in schema.get(key, ()) if option != NULL]
            if key in schema and len(options) < len(schema[key]):
                del schema[key]
                if len(options) == 1:
                    schema.update(options[0])
                else:
                    schema[key] = options


def _any_items(node: Any) -> None:
    """``items: {}`` on every array schema without ``items`` (msgspec's ``list[Any]``): the same
    schema, which generators that need ``items`` (openapi-python-client) can read."""
    if isinstance(node, dict):
        if node.get("type") == "array" and "items" not in node and "prefixItems" not in node:
            node["items"] = {}
        for value in node.values():
            _any_items(value)
    elif isinstance(node, list):
        for value in node:
            _any_items(value)


def _response(operation: dict[str, Any], status: str, description: str) -> dict[str, Any]:
    responses = operation.setdefault("responses", {})
    existing = responses.get(status) or {}
    response = responses[status] = {"description": existing.get("description") or description, **existing}
    return response


def _header(response: dict[str, Any], name: str, description: str, *, required: bool = False) -> None:
    headers = response.setdefault("headers", {})
    headers[name] = {"description": description, "required": required, "schema": {"type": "string"}}


def _document_answers(path: str, handler: HTTPRouteHandler, name: str, operation: dict[str, Any]) -> None:
    statuses = list(ERROR_STATUSES)
    if staff_only in (handler.guards or ()):
        statuses.append("403")
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF.format(name="Problem")}}}
    for status in statuses:
        if (name, status) in NOT_PROBLEMS:
            continue
        _response(operation, status, "Problem")["content"] = problem
    _header(_response(operation, "429", "Problem"), "Retry-After", RETRY_AFTER, required=True)
    _header(_response(operation, "503", "Problem"), "Retry-After", RETRY_AFTER)
    if not path.startswith(QUOTA_EXEMPT):
        for response in operation["responses"].values():
            for header, description in RATE_LIMIT_HEADERS.items():
                _header(response, header, description)


def _document_event_stream(operation: dict[str, Any]) -> None:
    kinds = ", ".join(f"`{kind}`" for kind in sorted(STUDENT_KINDS))
    ok = _response(operation, "200", "The job's events")
    ok["description"] = (
        f"Server-sent events: {kinds} (each with an `id:`, its stream sequence, for `Last-Event-ID`), "
        "then `done` with the job's result (JobResult), after which the server closes the stream; "
        "`reconnect` when this server is stopping (reconnect with Last-Event-ID). Comments keep it alive."
    )
    # Each event as SSE parsers hand it over (OpenAPI 3.2's itemSchema; tools for 3.1 read `schema`).
    event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": [*sorted(STUDENT_KINDS), "done", "reconnect"]},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    ok["content"] = {"text/event-stream": {"schema": event}}


def _add_links(operations: dict[tuple[str, str], tuple[HTTPRouteHandler, str, dict[str, Any]]]) -> None:
    ids = {name: operation["operationId"] for _, name, operation in operations.values()}
    by_name = {name: operation for _, name, operation in operations.values()}
    for (source, status), links in LINKS.items():
        response = by_name[source]["responses"][status]
        documented = response.setdefault("links", {})
        for link_name, (target, parameters, body) in links.items():
            link: dict[str, Any] = {"operationId": ids[target]}
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                link["requestBody"] = body
            documented[link_name] = link
