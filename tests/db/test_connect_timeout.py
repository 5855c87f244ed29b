"""A database host that never answers costs a request seconds, not minutes.

A dropped route or a firewall that discards packets leaves libpq waiting as long as
TCP does, with the request and its thread held. medvault adds libpq's
``connect_timeout`` (10 s) to every PostgreSQL URL that does not set its own, so such a
request fails with OperationalError, which the API answers as a 503.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

from medvault.db.engine import PG_CONNECT_TIMEOUT, Database


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_every_postgresql_url_gets_a_connect_timeout_unless_it_has_one() -> None:
    plain = Database("postgresql+psycopg://vault@db.internal:5432/medvault_clinical")
    own = Database("postgresql+psycopg://vault@db.internal/medvault_clinical?connect_timeout=3")
    sqlite = Database("sqlite://")
    try:
        assert plain.url.query["connect_timeout"] == PG_CONNECT_TIMEOUT
        assert own.url.query["connect_timeout"] == "3"
        assert "connect_timeout" not in sqlite.url.query
    finally:
        for database in (plain, own, sqlite):
            database.dispose()


def test_a_server_that_never_answers_fails_the_connection_instead_of_hanging() -> None:
    with silent_server() as port:
        database = Database(
            f"postgresql+psycopg://vault@127.0.0.1:{port}/clinical?connect_timeout=1"
        )
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                with database.engine.connect():
                    pass
            except BaseException as exc:
                outcome.append(exc)

        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        # Without a timeout the attempt blocks for as long as the server stays silent.
        attempt.join(timeout=60)
        database.dispose()
        assert not attempt.is_alive(), "the connection attempt is still waiting"
        assert len(outcome) == 1
        assert isinstance(outcome[0], OperationalError)
        assert "timeout" in str(outcome[0].orig).lower()
