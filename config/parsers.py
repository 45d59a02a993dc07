from __future__ import annotations

import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils.json import strict_constant


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class KeyNotTextError(ValueError):
    pass


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    for key in found:
        # A key may be quoted back in an error (an unknown field); a lone surrogate (a "\ud800"
        # escape) is not text that can be written out. Values are checked by their fields.
        if not key.isascii():
            try:
                key.encode()
            except UnicodeEncodeError:
                raise KeyNotTextError from None
    return found


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, stricter and quieter: an object naming a key twice is refused (Python's
    parser keeps the last, so `{"credits": 1, "credits": 2}` would charge 2), as are documents
    nested too deep, NaN and Infinity; and the error says what is wrong in our words, never
    Python's (its messages name interpreter internals such as sys.set_int_max_str_digits)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})  # the Content-Type's charset, else UTF-8
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"JSON parse error - the body is not {encoding[:40]} text.") from None
        try:
            return json.loads(text, object_pairs_hook=_object_without_duplicate_keys, parse_constant=strict_constant)
        except DuplicateKeyError as exc:
            raise ParseError(f"JSON parse error - the key {exc.key[:100]!r} appears twice in one object.") from None
        except KeyNotTextError:
            raise ParseError("JSON parse error - a key is not Unicode text (a lone surrogate escape).") from None
        except json.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError:  # a number with too many digits, NaN, Infinity
            raise ParseError("JSON parse error - a number is too long or not finite.") from None
