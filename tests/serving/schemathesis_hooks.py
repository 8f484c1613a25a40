"""What the API's contract cannot say, for schemathesis (loaded by schemathesis.toml).

`positive_data_acceptance` expects a request the OpenAPI schema allows to be taken (or
answered 401/403/404/409/429). A few refusals depend on things no JSON Schema can
describe; a "schema-valid request rejected" failure is dropped for exactly these error
codes, and only for them (every other code, and every other check, still fails the run):

- the bytes of an uploaded picture: JSON Schema describes a file only as binary, and the
  image decoder refuses what it cannot read with 422 and its own code;
- a webhook's host: it must be (and resolve to) a public address, a DNS lookup at the
  time of the request;
- the model a request names: its styles, family and task (what needs a picture, a mask),
  and the factors an upscaler was trained for, belong to that model, which the schema
  knows only as a name; a mask must also fit its picture;
- a live session's history: /full without a style repeats its last render;
- a train job's run config (and an estimate's), checked against the named architecture
  and dataset: model_config keys, the parameter count, the server's limits on values in
  `config`, and whether a few steps of it run on this machine (an estimate);
- two rules of multipart forms with files, said in the fields' descriptions: schemathesis
  cannot validate a body holding files against a rule on a file's absence or a `not`
  (mix: one weight per reference picture, one weight positive; restyle: variations need
  a learned style, not a reference picture).

`negative_data_rejection` expects a request that breaks the schema to be refused. A
multipart form carries text: a field schemathesis makes null (or false, or 12) to break
its `string` type is sent as the text "null", a valid string; and a shrunk example can
lose the part that broke the schema. A query string carries text too: 0.0 for an integer
parameter is sent as "0.0" (an integer to JSON Schema as well), a one-item array as one
value. Such failures (the request as sent meets the schema) are dropped too.

`ensure_resource_availability` reads a 404 right after a resource was created as that
resource missing; on a live session's routes a 404 can name a model the body refers to
(an unknown upscaler) while the session is there (its own 404 is `unknown_session`).

A dropped failure is counted in schemathesis' summary ("dropped by filter_failure"); with
POLYCHROME_CONTRACT_DROPPED set to a file, each is also appended there as a JSON line
(operation, check, status, code).
"""

from __future__ import annotations

import json
import math
import os
import re
from urllib.parse import parse_qsl, urlsplit

import schemathesis

# The image decoder's refusals (polychrome.errors.ImageRejected, 422).
PICTURE_CODES = frozenset({"corrupt", "unsupported", "too_large", "too_small", "unsafe"})
# 400s that depend on the named model (or the picture) or the webhook host, anywhere:
# `unsupported` is what the model's kind of style codes cannot do (a per-layer mix, a
# reference picture, a blend), `too_large` a result the picture and the model make larger
# than the server's cap (a size the request states alone is capped in the schema).
STATE_CODES = frozenset({"bad_webhook", "unknown_style", "wrong_family", "wrong_task",
                         "bad_scale", "no_upscaler", "unsupported", "too_large"})
# 400s that depend on the named model on some operations: (code, operations, and the
# request media type when it matters).
OPERATION_CODES = [
    # translation models restyle a picture, which a JSON body cannot carry
    ("missing_input", {"POST /api/mix", "POST /api/interpolate"}, None),
    # Rules a form with files states in its fields' descriptions only (schemathesis cannot
    # validate a body holding files against a rule on a file's absence or on `not`): one
    # weight per reference picture and one weight positive; variations without a reference
    ("bad_weight", {"POST /api/mix"}, "multipart/"),
    # /full without a style repeats the session's last render: there must have been one
    ("missing_style", {"POST /api/restyle/sessions/{session_id}/full"}, None),
    # a mask is for inpainting models (and must fit the picture and leave some of it)
    ("bad_mask", {"POST /api/restore"}, None),
    ("missing_mask", {"POST /api/restore"}, None),
    # the run config, checked against the named architecture and dataset
    *((code, {"POST /api/jobs", "POST /api/presets/estimate"}, None)
      for code in ("config_error", "model_error", "bad_config", "no_pairs")),
    # an estimate trains the configuration for a few steps: a run that fails or takes too
    # long on this machine
    ("estimate_failed", {"POST /api/presets/estimate"}, None),
]


def refusal_code(response) -> tuple[int, str | None]:
    """(status, the error body's code) of an answer."""
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return response.status_code, None
    error = body.get("error") if isinstance(body, dict) else None
    return response.status_code, error.get("code") if isinstance(error, dict) else None


# ... and the restyle form's rule on variations, whose refusal has no code of its own.
VARIATIONS_REFUSED = "variations need a latent-guided style"


def beyond_the_schema(operation: str, media_type: str, response) -> bool:
    """The answer refuses a schema-valid request for a reason the schema cannot state."""
    status, code = refusal_code(response)
    if status == 422:
        return code in PICTURE_CODES
    if (status, code, operation) == (400, "bad_request", "POST /api/restyle"):
        return VARIATIONS_REFUSED in response.text
    return status == 400 and (code in STATE_CODES or any(
        code == known and operation in where and media_type.startswith(media or "")
        for known, where, media in OPERATION_CODES))


def _form_schema(case) -> dict | None:
    for body in case.operation.body:
        if body.media_type == case.media_type:
            schema = body.definition.get("schema")
            return schema if isinstance(schema, dict) else None
    return None


def _files_as_text(value):
    if isinstance(value, list):
        return [_files_as_text(v) for v in value]
    plain = (str, int, float, bool, dict, type(None))  # (files are a str subclass, or bytes)
    return value if type(value) in plain else ""


def form_is_valid(case) -> bool:
    """A multipart case that, as generated (files read as text), meets the schema: not a
    negative case at all (a shrunk example can lose the part that broke the schema)."""
    import jsonschema_rs

    schema = _form_schema(case)
    if not (case.media_type or "").startswith("multipart/") or schema is None \
            or not isinstance(case.body, dict):
        return False
    body = {k: _files_as_text(v) for k, v in case.body.items()}
    return jsonschema_rs.validator_for(schema).is_valid(body)


def text_sent_as_text(case) -> bool:
    """A multipart case whose only violations give a string field another JSON type: on
    the wire the field is text all the same ("null", "false", "12")."""
    if not (case.media_type or "").startswith("multipart/"):
        return False
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutations = [m.to_dict() for m in getattr(data, "mutations", None) or ()]
    return bool(mutations) and all(
        (m["operator"], m["original_value"]) == ("change_type", "string") for m in mutations)


def _note(operation: str, check: str, response) -> None:
    path = os.environ.get("POLYCHROME_CONTRACT_DROPPED")
    if path:
        status, code = refusal_code(response)
        with open(path, "a") as f:
            f.write(json.dumps({"operation": operation, "check": check, "status": status,
                                "code": code}) + "\n")


def _readings(text: str):
    """What a query value's text may stand for: itself, a number, a boolean."""
    yield text
    if re.fullmatch(r"-?[0-9]+(\.0*)?", text):
        yield int(text.split(".")[0])
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        yield number
    if text in ("true", "false"):
        yield text == "true"


def query_as_sent_is_valid(case, response) -> bool:
    """A case whose violations are all in the query string, where what was sent is text
    that meets each parameter's schema (a number 0.0 sent as "0.0" for an integer -- 0.0
    is an integer to JSON Schema -- or a one-item array sent as one value)."""
    import jsonschema_rs

    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutations = [m.to_dict() for m in getattr(data, "mutations", None) or ()]
    places = {m["parameter_location"] for m in mutations} or {
        getattr(getattr(data, "parameter_location", None), "value",
                getattr(data, "parameter_location", None))}
    if places != {"query"}:
        return False
    sent: dict[str, list[str]] = {}
    for key, value in parse_qsl(urlsplit(str(response.request.url)).query,
                                keep_blank_values=True):
        sent.setdefault(key, []).append(value)
    params = {p.name: p for p in case.operation.query}
    if set(sent) - set(params):
        return False
    for name, param in params.items():
        values = sent.get(name)
        if values is None:
            if param.is_required:
                return False
            continue
        validator = jsonschema_rs.validator_for(param.definition.get("schema", {}))
        if len(values) != 1 or not any(validator.is_valid(r) for r in _readings(values[0])):
            return False
    return True


def another_resource_missing(case, response) -> bool:
    """A 404 on a live session's route that names something else the body refers to (an
    upscaler model), not the session: the session was there."""
    status, code = refusal_code(response)
    return status == 404 and "{session_id}" in case.path and code != "unknown_session"


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    checks = getattr(failure, "checks", ())
    operation = f"{case.method.upper()} {case.path}"
    for check, dropped in (
            ("ensure_resource_availability", lambda: another_resource_missing(case, response)),
            ("positive_data_acceptance",
             lambda: beyond_the_schema(operation, case.media_type or "", response)),
            ("negative_data_rejection",
             lambda: text_sent_as_text(case) or form_is_valid(case)
             or query_as_sent_is_valid(case, response))):
        if check in checks and dropped():
            _note(operation, check, response)
            return False
    return True


# -- realistic pictures ------------------------------------------------------------------
# A file field is binary to JSON Schema, so generated uploads are almost never pictures and
# every route that takes one would stop at the decoder's 422. Half of the schema-valid
# multipart cases (never a negative one: its broken part must stay broken) carry a real
# picture in each picture field instead, so those requests reach the models (a live
# session's chain through the schema's links starts with one).
PICTURE_FIELDS = ("image", "reference", "from_reference", "to_reference")
_draws = __import__("random").Random(1)


def _picture() -> bytes:
    import io

    from PIL import Image

    size = (_draws.randint(12, 40), _draws.randint(12, 40))
    img = Image.new("RGB", size, tuple(_draws.randrange(256) for _ in range(3)))
    img.paste(tuple(_draws.randrange(256) for _ in range(3)),
              (0, 0, size[0] // 2, size[1] // 2))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@schemathesis.hook
def before_call(context, case, **kwargs) -> None:
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    if getattr(mode, "name", "") != "POSITIVE" or not isinstance(case.body, dict) \
            or not (case.media_type or "").startswith("multipart/"):
        return
    if _draws.random() < 0.5:
        return
    for field in PICTURE_FIELDS:
        value = case.body.get(field)
        if isinstance(value, list):
            case.body[field] = [_picture() for _ in value]
        elif value is not None:
            case.body[field] = _picture()
