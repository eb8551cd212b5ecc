"""A small fake bridge (Prologix box, serial server) on 127.0.0.1, for the SOCS transport tests.

``FakeBridge(respond)`` listens on a free port; each request (a line ending
in ``terminator``) goes to the instrument behind it, ``respond(request) ->
reply or None``. Like a real bridge it hands a reply to whichever TCP
connection is open when the reply is ready, and holds it while none is: an
instrument's late reply reaches the *next* connection. Faults, set at any
time: ``late[prefix] = seconds`` (replies to requests starting with
``prefix`` come that late; ``late_once``: the next one only), ``split[prefix] = seconds`` (the reply comes in
two pieces that far apart), ``silent`` (no replies), ``chatter()`` (noise), ``drop_client()`` (a
peer close) and ``stop()``/``start()`` (an outage; the same port again).
``events`` records ``('open', n)``, ``('client closed', n)``, and
``('second client', n)`` when connection ``n`` came while the client had the
previous one still open (the bridge then drops the previous, as one-client
bridges do).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class FakeBridge:
    def __init__(self, respond: Callable[[bytes], bytes | None], terminator: bytes = b'\n',
                 port: int = 0) -> None:
        self.respond = respond
        self.terminator = terminator
        self.late: dict[bytes, float] = {}
        self.late_once: dict[bytes, float] = {}
        self.silent = False
        self.split: dict[bytes, float] = {}
        self.events: list[tuple[str, int]] = []
        self.requests: list[tuple[int, bytes]] = []   # (connection number, request)
        self.connections = 0
        self._lock = threading.Lock()
        self._current: socket.socket | None = None
        self._held: list[bytes] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self.port = port
        self.start()

    # -- control -------------------------------------------------------------------

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', self.port))
        listener.listen(8)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        """Close the listener and every connection (an outage); replies in flight are held."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() (close alone does not)
            except OSError:
                pass
            listener.close()
        self.drop_client()

    def chatter(self, seconds: float, every: float = 0.05) -> threading.Thread:
        """Send a byte of line noise every ``every`` s for ``seconds`` s (a line that never goes quiet)."""
        def noise() -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                self._deliver(b'~')
                time.sleep(every)
        self._spawn(noise)
        return self._threads[-1]

    def drop_client(self) -> None:
        """Close the open connection (a peer close)."""
        with self._lock:
            conn, self._current = self._current, None
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.stop()
        for thread in self._threads:
            thread.join(2)

    def requests_on(self, connection: int) -> list[bytes]:
        return [r for n, r in self.requests if n == connection]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError('condition not met within the bound')
            time.sleep(0.01)

    # -- the bridge ----------------------------------------------------------------

    def _spawn(self, fn, *args) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                old, self._current = self._current, conn
                held, self._held = self._held, []
                if old is not None and self._still_open(old):
                    self.events.append(('second client', number))
                self.events.append(('open', number))
            if old is not None:
                old.close()   # one client at a time, as many bridges
            for reply in held:
                conn.sendall(reply)
            self._spawn(self._serve, conn, number)

    @staticmethod
    def _still_open(conn: socket.socket) -> bool:
        """Whether the client has not closed ``conn`` (nor reset it)."""
        try:
            return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b''
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b''
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                data = b''
            if not data:
                with self._lock:
                    if self._current is conn:
                        self._current = None
                        self.events.append(('client closed', number))
                conn.close()
                return
            buffer += data
            while self.terminator in buffer:
                request, buffer = buffer.split(self.terminator, 1)
                self.requests.append((number, request))
                self._answer(request)

    def _answer(self, request: bytes) -> None:
        if self.silent:
            return
        reply = self.respond(request)
        if reply is None:
            return
        delay = next((s for prefix, s in self.late.items() if request.startswith(prefix)), 0.0)
        for prefix in [p for p in self.late_once if request.startswith(p)]:
            delay = self.late_once.pop(prefix)
        pause = next((s for prefix, s in self.split.items() if request.startswith(prefix)), 0.0)
        if pause:
            half = len(reply) // 2
            self._deliver(reply[:half])
            timer = threading.Timer(pause, self._deliver, (reply[half:],))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        elif delay:
            timer = threading.Timer(delay, self._deliver, (reply,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        else:
            self._deliver(reply)

    def _deliver(self, reply: bytes) -> None:
        with self._lock:
            conn = self._current
            if conn is None:
                self._held.append(reply)
                return
        try:
            conn.sendall(reply)
        except OSError:
            with self._lock:
                self._held.append(reply)
