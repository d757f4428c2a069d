"""PostgreSQL access: a thread-safe connection pool and one-transaction units of work.

psycopg2 with plain parameterized SQL (repositories own all SQL). Every
connection from the pool has ``search_path`` set to the owning service's schema
so a service can never read another's tables by accident.

A database restart ends every server session, and each idle pooled connection
would fail the first caller that borrowed it. So the pool never lends one it
has reason to doubt (:meth:`Database._checkout`):

* every checkout looks at the socket without a round trip (``poll()``): a
  session the server ended has its goodbye and end-of-stream waiting there;
* a connection that fails with a connection-level error (:func:`connection_lost`)
  is discarded, never pooled again, and makes every connection last known good
  before that moment *suspect* (an epoch: :attr:`Database.generation`);
* a suspect connection, or one idle longer than :data:`IDLE_PING_AFTER_S`, is
  pinged (``SELECT 1``) before it is lent; one that fails is discarded and the
  checkout takes the next, or a new one. Nothing of the caller's has been sent
  then, so that retry is always safe; a transaction that already ran
  statements is never replayed (its error goes to the caller: a 503, see
  :mod:`shared.errors`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

from shared.logging import get_logger

psycopg2.extras.register_uuid()

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 5
# A statement that takes longer than this is a bug or a lock pile-up; fail it
# rather than hold an HTTP worker forever.
STATEMENT_TIMEOUT_MS = 15_000
# A connection unused this long is pinged before it is lent: the socket check
# cannot see a peer that vanished without closing (a firewall's idle timeout, a
# failover). A busy pool never pays it; a quiet one pays one round trip per
# connection and idle spell.
IDLE_PING_AFTER_S = 5.0
# SQLSTATEs of a lost or refused session: class 08 (connection exception), the
# server shutting down or still starting (57P01-57P03: administrator, crash,
# cannot connect now), out of connection slots (53300).
_CONNECTION_SQLSTATES = frozenset({"08000", "08001", "08003", "08004", "08006", "08007", "08P01",
                                   "57P01", "57P02", "57P03", "53300"})
_CONNECTION_ERROR_CLASSES = tuple({psycopg2.errors.lookup(code) for code in _CONNECTION_SQLSTATES})


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection is gone or could not be made.

    Not a statement's own failure (a constraint, a timeout, a deadlock): the
    server or the way to it. Such an error is transient by nature, and no
    caller's fault.
    """
    if isinstance(exc, psycopg2.InterfaceError):  # a connection closed under its user
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    if exc.pgcode is not None:
        return exc.pgcode in _CONNECTION_SQLSTATES or exc.pgcode.startswith("08")
    # No SQLSTATE: libpq's own failure (the socket closed, a connect refused or
    # timed out) is a plain OperationalError; an error class made without a
    # code (by Python code, not from the server's answer) says its kind.
    return type(exc) is psycopg2.OperationalError or isinstance(exc, _CONNECTION_ERROR_CLASSES)


class PooledConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that remembers when it last worked (the pool's bookkeeping)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # time.monotonic() of the last evidence the session is alive: opened,
        # pinged, or used without a connection-level error.
        self.last_ok = time.monotonic()


class Database:
    """A pooled PostgreSQL connection source bound to one schema."""

    def __init__(self, dsn: str, schema: str, minconn: int = 1, maxconn: int = 10,
                 application_name: str = "order-platform"):
        self.dsn = dsn
        self.schema = schema
        self._options = (
            f"-c search_path={schema},public -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        )
        self._pool = psycopg2.pool.ThreadedConnectionPool(
            minconn, maxconn, dsn=dsn, connect_timeout=CONNECT_TIMEOUT_S,
            options=self._options, application_name=application_name,
            connection_factory=PooledConnection,
        )
        # psycopg2's pool *closes* a returned connection whenever ``minconn``
        # are already idle, so under concurrency every borrow beyond the
        # first opened a new server backend (a fork + auth per transaction).
        # ``minconn`` only sizes the eager start; afterwards keep up to
        # ``maxconn`` idle connections for reuse.
        self._pool.minconn = maxconn
        # ThreadedConnectionPool raises when exhausted; a semaphore makes
        # callers wait for a free connection instead.
        self._slots = threading.BoundedSemaphore(maxconn)
        self._maxconn = maxconn
        # The epoch: connections last known good before this moment are
        # suspect. Plain assignments under the GIL; two threads moving it at
        # once both move it to about now, which is all it needs.
        self._suspect_before = float("-inf")
        self.generation = 0  # how many times the epoch moved (logs, tests)

    @contextlib.contextmanager
    def connection(self, timeout: float = 10.0) -> Iterator[psycopg2.extensions.connection]:
        """Borrow a connection; it goes back to the pool (rolled back) afterwards.

        One that failed with a connection-level error is discarded instead.
        """
        if not self._slots.acquire(timeout=timeout):
            raise PoolExhausted(f"no database connection free within {timeout}s")
        conn = None
        lost = False
        try:
            conn = self._checkout()
            try:
                yield conn
            except BaseException as exc:
                lost = connection_lost(exc)
                raise
        finally:
            if conn is not None:
                self._checkin(conn, lost)
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """Run the block in one transaction; commit on success, roll back on error."""
        with self.connection() as conn:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                try:
                    yield cur
                    conn.commit()
                except BaseException:
                    # On a lost connection the rollback fails too; the caller
                    # must see why the transaction failed, not that. The
                    # connection is discarded on the way back to the pool.
                    with contextlib.suppress(psycopg2.Error):
                        conn.rollback()
                    raise

    def ping(self) -> None:
        """Raise if the database does not answer ``SELECT 1``."""
        with self.transaction() as cur:
            cur.execute("SELECT 1")

    def listen_connection(self, channel: str) -> psycopg2.extensions.connection:
        """Open a dedicated autocommit connection LISTENing on ``channel``."""
        conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S,
                                options=self._options)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    def close(self) -> None:
        """Close every pooled connection (for good: loops that follow this database end)."""
        self._pool.closeall()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    # -- pool hygiene -------------------------------------------------------
    def _checkout(self) -> PooledConnection:
        """A pooled (or new) connection with no known reason to fail its first statement."""
        # Each failed look discards one connection, so after at most the pool's
        # size the pool opens a new one; a database that is really down fails
        # that connect (OperationalError, connection-level) and it propagates.
        for _attempt in range(self._maxconn + 1):
            conn = self._pool.getconn()
            if not self._socket_alive(conn):
                self._discard(conn, "closed by the server")
                continue
            now = time.monotonic()
            if conn.last_ok < self._suspect_before or now - conn.last_ok > IDLE_PING_AFTER_S:
                if not self._ping(conn):
                    self._discard(conn, "ping failed")
                    continue
                conn.last_ok = time.monotonic()
            return conn
        raise psycopg2.OperationalError(
            f"no live database connection after {self._maxconn + 1} attempts")

    def _checkin(self, conn: PooledConnection, lost: bool) -> None:
        broken = lost or conn.closed != 0
        if not broken:
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
        if broken:
            self._discard(conn, "failed in use")
            return
        conn.last_ok = time.monotonic()
        self._pool.putconn(conn)

    @staticmethod
    def _socket_alive(conn: PooledConnection) -> bool:
        """No round trip: whether the server has ended this session (as a restart does)."""
        if conn.closed:
            return False
        try:
            # The first poll() reads what is waiting (when the server ended the
            # session: its FATAL notice), the second meets the end of the stream.
            # On a live idle session each is one non-blocking read (~1 us).
            conn.poll()
            conn.poll()
        except psycopg2.Error:
            return False
        return True

    @staticmethod
    def _ping(conn: PooledConnection) -> bool:
        """One round trip (``SELECT 1`` outside a transaction): whether the session answers."""
        try:
            conn.autocommit = True  # no BEGIN/ROLLBACK around the ping: one round trip, not three
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.autocommit = False
        except psycopg2.Error:
            return False
        return True

    def _discard(self, conn: PooledConnection, reason: str) -> None:
        """Close ``conn`` for good; if it was believed good, every older connection becomes suspect."""
        if conn.last_ok >= self._suspect_before:
            self._suspect_before = time.monotonic()
            self.generation += 1
            log.warning("db_connections_suspect", schema=self.schema, reason=reason,
                        generation=self.generation)
        self._pool.putconn(conn, close=True)


class PoolExhausted(RuntimeError):
    """Every pooled connection stayed busy for the whole wait."""


def database_for(settings) -> Database:
    """Build the pool for a service from its :class:`shared.config.Settings`."""
    return Database(settings.database_url, settings.schema, settings.db_pool_min,
                    settings.db_pool_max, application_name=settings.producer)
