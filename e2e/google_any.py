"""Builds Flight SQL command descriptors (CommandStatementQuery, CommandGetTables) by hand (protobuf wire
format), so pyarrow's plain Flight client can speak Flight SQL without generated code."""

from pyarrow import flight

TYPE_URL = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def statement_descriptor(sql: str) -> flight.FlightDescriptor:
    command = _field(1, sql.encode())
    any_message = _field(1, TYPE_URL) + _field(2, command)
    return flight.FlightDescriptor.for_command(any_message)


def tables_descriptor(schema_pattern: str) -> flight.FlightDescriptor:
    """CommandGetTables for the schemas matching `schema_pattern` (a LIKE pattern)."""
    command = _field(2, schema_pattern.encode())
    any_message = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandGetTables") + _field(2, command)
    return flight.FlightDescriptor.for_command(any_message)
