"""first_line: the one line an error report shows."""

from lora_search.spaces import first_line


class _Wrapped(Exception):
    """Shaped like SQLAlchemy's DBAPIError: the driver's own error in ``orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("(psycopg.OperationalError) connection failed\n[SQL: SELECT 1]")
        self.orig = orig


def test_first_line_keeps_the_first_line_only():
    assert first_line(ValueError("bad value\nTraceback details")) == "bad value"


def test_first_line_names_the_type_of_an_empty_error():
    assert first_line(MemoryError()) == "MemoryError"
    assert first_line(RuntimeError("  \n")) == "RuntimeError"


def test_first_line_prefers_the_wrapped_driver_message():
    assert first_line(_Wrapped(OSError("connection refused\nIs the server running?"))) == "connection refused"
