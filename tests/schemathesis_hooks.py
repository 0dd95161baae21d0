"""Schemathesis hooks for ``tests/test_contract.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

The OpenAPI document says that the photo parts of a form are ``image/jpeg``, ``image/png``, ...
(the ``encoding`` of each operation). A fuzzer cannot make a decodable PNG from a JSON schema, so
these tell Schemathesis how to make values of those media types: small real images of random size
and colour. Every other part, field and body it still generates from the document alone, but
one: a face index (``/verify``'s ``face_a``/``face_b``, marked ``x-face-of``) must name a face
its photo holds, which no schema can say; the photos made here hold one face each (the service
runs without ``--detect``), so ``map_body`` / ``map_case`` send a valid index as 0 and an
invalid one as drawn (a case keeps its mode). Indexes beyond a photo's faces are refused by
tests of their own (``tests/test_serve.py``, ``tests/test_face_choice.py``).

Three repairs of Schemathesis itself (4.32.5), so that a finding is the service's and not the
tool's; the document is not bent for any:

- for an *array* of such parts (``/enroll``'s ``files``) it draws a single image in place of the
  array and sends it without a filename (it names the items of arrays only), so the server reads
  a text field: ``map_body`` / ``map_case`` put the image back into a list;
- its coverage phase fills every other required field of such a form with ``""``, whatever its
  schema says, and calls the case positive;
- a form part is text on the wire, so some "negative" values are sent as valid ones (the integer
  8246 as a name is the text ``8246``; ``top_k: [3]`` is one part ``3``); Schemathesis reads
  query parameters as sent, but not form parts.

``filter_case`` therefore judges each form case by what it sends (:func:`sent_as_valid`): a
case labelled positive must obey the document, one labelled negative must not; any other is
dropped, never counted as passed.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import schemathesis
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from PIL import Image


def images(kind: str) -> st.SearchStrategy[bytes]:
    """Encoded images of 1-48 px a side in one random colour."""

    def encode(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, kind)
        return buffer.getvalue()

    side = st.integers(1, 48)
    level = st.integers(0, 255)
    return st.builds(encode, st.tuples(side, side), st.tuples(level, level, level))


schemathesis.openapi.media_type("image/png", images("PNG"))
schemathesis.openapi.media_type("image/jpeg", images("JPEG"))

_INVALID = object()
PHOTO_ARRAYS = ("files",)  # form properties that are arrays of photos


def _photos_in_lists(fields: object) -> None:
    if isinstance(fields, dict):
        for name in PHOTO_ARRAYS:
            if isinstance(fields.get(name), bytes):
                fields[name] = [fields[name]]


def _faces_of_the_photos(context: Any, fields: object) -> None:
    """A valid face index (a field marked ``x-face-of``) sent as 0: the photos made here hold
    one face each. An invalid one is sent as drawn: a case keeps its mode."""
    operation = getattr(context, "operation", None)
    if operation is None or not isinstance(fields, dict):
        return
    body = operation.get_body_for_media_type("multipart/form-data")
    schema = (body.resolved_schema if body is not None else None) or {}
    for name, sub in schema.get("properties", {}).items():
        if "x-face-of" not in sub or name not in fields:
            continue
        value = fields[name]
        values = value if isinstance(value, list) else [value]
        kept = [
            ("0" if isinstance(v, str) else 0) if _valid(v, sub) and not isinstance(v, bool) else v
            for v in values
        ]
        fields[name] = kept if isinstance(value, list) else kept[0]


def _valid(value: object, schema: dict[str, Any]) -> bool:
    read = _read(value if isinstance(value, str) else json.dumps(value), schema)
    return read is not _INVALID and Draft202012Validator(schema).is_valid(read)


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    # fuzzing: a form with typed parts is a FormBodyWithContentTypes (.body: the fields)
    _photos_in_lists(getattr(body, "body", body))
    _faces_of_the_photos(context, getattr(body, "body", body))
    return body


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    _photos_in_lists(case.body)  # the coverage phase
    _faces_of_the_photos(context, case.body)
    return case


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Judge a form case by what it sends: drop one labelled positive that breaks the document,
    and one labelled negative whose parts, read as the text they are, obey it."""
    meta, fields = case.meta, case.body
    if meta is None or not isinstance(fields, dict) or case.media_type != "multipart/form-data":
        return True
    return sent_as_valid(case) == meta.generation.mode.is_positive


def _is_photo(schema: dict[str, Any]) -> bool:
    # FastAPI writes an upload as OpenAPI 3.1's octet-stream string (3.0's binary before)
    return (
        schema.get("contentMediaType") == "application/octet-stream"
        or schema.get("format") == "binary"
    )


def _read(text: str, schema: dict[str, Any]) -> object:
    """A form part's text as the value its schema's type reads it as (``_INVALID`` if none)."""
    kind = schema.get("type")
    if kind == "integer":
        return int(text) if re.fullmatch(r"-?\d+", text) else _INVALID
    if kind == "number":
        number = r"-?\d+(\.\d*)?([eE][-+]?\d+)?"
        return float(text) if re.fullmatch(number, text) else _INVALID
    return text


def sent_as_valid(case: Any) -> bool:
    """Whether the form's parts, as sent (every value is text or a file on the wire; a list is
    repeated parts; an empty optional field counts as not given), obey the document."""
    body = case.operation.get_body_for_media_type(case.media_type)
    schema = (body.resolved_schema if body is not None else None) or {}
    properties, required = schema.get("properties", {}), set(schema.get("required", []))
    for name, sub in properties.items():
        value = case.body.get(name)
        values = value if isinstance(value, list) else [] if value is None else [value]
        if sub.get("type") != "array" and all(v == "" for v in values):
            values = []  # an empty field is no field (FastAPI reads forms as browsers fill them)
        if not values:
            if name in required:
                return False
            continue
        if sub.get("type") == "array":
            items = sub.get("items") or {}
            if not sub.get("minItems", 0) <= len(values) <= sub.get("maxItems", len(values)):
                return False
            if _is_photo(items) and not all(isinstance(v, bytes) for v in values):
                return False
            continue
        if _is_photo(sub):
            if len(values) != 1 or not isinstance(values[0], bytes):
                return False
            continue
        if any(isinstance(v, bytes) for v in values):
            return False
        # repeated parts of a single field: the server may take any of them
        read = [_read(v if isinstance(v, str) else json.dumps(v), sub) for v in values]
        if not any(v is not _INVALID and Draft202012Validator(sub).is_valid(v) for v in read):
            return False
    return True
