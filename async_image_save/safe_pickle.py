"""Pickle restricted to plain data, for projects that opt in to pickle payload headers.

Only used when ``ASYNC_IMAGE_SAVE_ALLOW_PICKLE`` is on. Two guards: the opcodes
are walked without running them (plain data only, no declared length beyond the
data), then an unpickler that refuses every class and function loads it.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any

from async_image_save.exceptions import PayloadDecodeError

#: Pickle opcodes that build plain data only: anything naming a class or calling is refused.
SAFE_OPS = frozenset(
    [
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "POP",
        "POP_MARK",
        "DUP",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "FLOAT",
        "BINFLOAT",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "EMPTY_LIST",
        "APPEND",
        "APPENDS",
        "LIST",
        "EMPTY_TUPLE",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "EMPTY_DICT",
        "DICT",
        "SETITEM",
        "SETITEMS",
        "EMPTY_SET",
        "ADDITEMS",
        "FROZENSET",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "GET",
        "BINGET",
        "LONG_BINGET",
        "MEMOIZE",
    ]
)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars only: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise PayloadDecodeError(
            f"Pickle payload references {module}.{name}; only plain data is accepted.",
            code="pickle_refused",
        )


def check_ops(data: bytes) -> None:
    """Walk the opcodes without running them: plain data only, no length beyond the data.

    Unpickling reserves a declared length before reading it, so a 23-byte frame
    could ask for a gigabyte; pickletools only reads what is there.
    """
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name not in SAFE_OPS:
                raise PayloadDecodeError(
                    f"Pickle payload uses {opcode.name}; only plain data is accepted.",
                    code="pickle_refused",
                )
            if isinstance(arg, (bytes, str)) and len(arg) > len(data):
                raise PayloadDecodeError("Pickle payload declares more data than it has.")
    except PayloadDecodeError:
        raise
    except Exception as exc:  # genops raises ValueError and friends on garbage
        raise PayloadDecodeError(f"Payload header is not valid pickle: {exc}") from exc


def loads_plain_data(data: bytes) -> Any:
    """Unpickle ``data`` if it builds plain containers and scalars only, else refuse it.

    Raises :class:`~async_image_save.exceptions.PayloadDecodeError` (code
    ``pickle_refused`` for anything that names a class or calls).
    """
    check_ops(data)
    try:
        return _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except PayloadDecodeError:
        raise
    except Exception as exc:  # pickle raises many unrelated types on garbage
        raise PayloadDecodeError(f"Payload header is not valid pickle: {exc}") from exc
