"""Small fake devices on 127.0.0.1 for the SOCS transport tests.

``FakeBridge`` is a serial-to-Ethernet server port (a Moxa NPort in TCP server
mode): one TCP client at a time (another is accepted and closed at once,
counted in ``rejected``), bytes from the client go to an instrument, and the
instrument's output goes to the client, or is held and handed to the next
client when none is connected. The instrument answers in order, each reply
after its own delay (``instrument.delays``, consumed per reply; None: no reply).
"""

from __future__ import annotations

import select
import socket
import threading
import time


def free_port() -> int:
    """A port nothing listens on now (for a device that is down)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Instrument:
    """Base: split input into requests, answer each with ``answer(request)`` (None: no reply)."""

    default_delay = 0.005

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.requests: list[bytes] = []
        self._input = b''

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        self._input += data
        out = []
        for request in self.split():
            self.requests.append(request)
            reply = self.answer(request)
            if reply is not None:
                delay = self.delays.pop(0) if self.delays else self.default_delay
                if delay is not None:        # None: this request is lost on the serial line
                    out.append((delay, reply))
        return out

    def split(self) -> list[bytes]:
        raise NotImplementedError

    def answer(self, request: bytes) -> bytes | None:
        raise NotImplementedError


class DWL(Instrument):
    """DWL-5000XY: 12-byte commands; the two-axis angle request gets a 12-byte reply."""

    def __init__(self, x: float = 0.0, y: float = 0.0) -> None:
        super().__init__()
        self.x, self.y = x, y

    def split(self) -> list[bytes]:
        requests = []
        while len(self._input) >= 12:
            requests.append(self._input[:12])
            self._input = self._input[12:]
        return requests

    def answer(self, request: bytes) -> bytes | None:
        if request.startswith(b'\x06\x01\x02\xaa'):
            x = round(self.x * 10000) + 300000
            y = round(self.y * 10000) + 300000
            return b'\x61\x22' + y.to_bytes(3, 'little') + x.to_bytes(3, 'little') + b'\x00' * 4
        return None


class Sherborne(Instrument):
    """Sherborne tilt sensor: ``!148:SYS?\\r`` (X) and ``!149:SYS?\\r`` (Y); 16-byte replies."""

    def __init__(self, x: float = 0.0, y: float = 0.0) -> None:
        super().__init__()
        self.x, self.y = x, y

    def split(self) -> list[bytes]:
        *requests, self._input = self._input.split(b'\r')
        return [r for r in requests if r]

    def answer(self, request: bytes) -> bytes | None:
        axes = {b'!148:SYS?': self.x, b'!149:SYS?': self.y}
        if request in axes:
            return f'{axes[request]:+015.4f}\r'.encode()
        return None


class PMX(Instrument):
    """Kikusui PMX: SCPI lines ending in ``\\n\\r``; answers ``value\\n``."""

    def __init__(self, volt: float = 12.0, curr: float = 3.5) -> None:
        super().__init__()
        self.values = {b'MEAS:VOLT?': volt, b'MEAS:CURR?': curr, b'VOLT?': volt, b'CURR?': curr,
                       b'OUTP?': 0}

    def split(self) -> list[bytes]:
        *lines, self._input = self._input.split(b'\n')
        return [line.strip(b'\r') for line in lines if line.strip(b'\r')]

    def answer(self, request: bytes) -> bytes | None:
        if request in self.values:
            return f'{self.values[request]}\n'.encode()
        return None


class FakeBridge:
    """One serial port of a serial-to-Ethernet server, on 127.0.0.1."""

    def __init__(self, instrument: Instrument, port: int = 0) -> None:
        self.instrument = instrument
        self.port = port
        self.held = b''          # instrument output while no client is connected
        self.clients = 0         # connections accepted for use
        self.rejected = 0        # connections closed at once: the port was taken
        self._pending: list[tuple[float, bytes]] = []   # (due, reply), in order
        self._client: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = False

    def start(self) -> FakeBridge:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', self.port))
        listener.listen(4)
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, False
        self._thread = threading.Thread(target=self._run, name='fake-bridge', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """The bridge goes down: listener and client closed (held output kept)."""
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None

    def drop_client(self) -> None:
        """The bridge closes the client's connection (peer close)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _run(self) -> None:
        listener = self._listener
        try:
            while not self._stop:
                with self._lock:
                    client = self._client
                now = time.monotonic()
                due = self._pending[0][0] - now if self._pending else 0.02
                rlist = [listener] + ([client] if client is not None else [])
                readable, _, _ = select.select(rlist, [], [], max(0.0, min(due, 0.02)))
                # In the order the bytes came: a client's close before a new client.
                if client is not None and client in readable:
                    self._receive(client)
                if listener in readable:
                    self._accept(listener)
                self._emit()
        finally:
            listener.close()
            with self._lock:
                if self._client is not None:
                    self._client.close()
                    self._client = None

    def _accept(self, listener: socket.socket) -> None:
        sock, _ = listener.accept()
        with self._lock:
            if self._client is not None:
                self.rejected += 1
                sock.close()
                return
            self._client = sock
            self.clients += 1
            held, self.held = self.held, b''
        if held:
            sock.sendall(held)

    def _receive(self, client: socket.socket) -> None:
        try:
            data = client.recv(4096)
        except OSError:
            data = b''
        if not data:
            with self._lock:
                if self._client is client:
                    client.close()
                    self._client = None
            return
        now = time.monotonic()
        for delay, reply in self.instrument.feed(data):
            last = self._pending[-1][0] if self._pending else now
            self._pending.append((max(now + delay, last), reply))

    def _emit(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, reply = self._pending.pop(0)
            with self._lock:
                client = self._client
                if client is None:
                    self.held += reply
                    continue
            try:
                client.sendall(reply)
            except OSError:
                self.held += reply


class PIDController(Instrument):
    """Omega PID controller (HWP): ``*X01``-style commands ending in ``\\r\\n``; replies end in ``\\r``."""

    def __init__(self, freq: float = 1.5, target: float = 2.0) -> None:
        super().__init__()
        self.freq, self.target = freq, target

    def split(self) -> list[bytes]:
        *lines, self._input = self._input.split(b'\n')
        return [line.strip(b'\r') for line in lines if line.strip(b'\r')]

    def answer(self, request: bytes) -> bytes | None:
        cmd = request.decode()
        if cmd == '*X01':
            return f'X01{self.freq:.3f}\r'.encode()
        if cmd == '*R01':
            return f'R0140{int(self.target * 1000):04X}\r'.encode()
        if cmd == '*R02':
            return b'R02400000\r'
        if cmd.startswith('*W') or cmd.startswith('*Z'):
            return f'{cmd[1]}{cmd[2:4]}\r'.encode()
        return b'?43\r'


class Gripper(Instrument):
    """HWP gripper server: each command (one write, no terminator) is answered by a pickle.

    ``{'result': <command>, 'log': [...]}``; ``GET_STATE`` gets a reply longer
    than 4096 bytes, sent in two parts ``split_gap`` seconds apart.
    """

    split_gap = 0.1

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        import pickle
        command = data.decode()
        self.requests.append(data)
        delay = self.delays.pop(0) if self.delays else self.default_delay
        if delay is None:
            return []
        if command == 'GET_STATE':
            reply = pickle.dumps({'result': {'actuators': [{'axis': i, 'pos': 0.5 * i} for i in (1, 2, 3)]},
                                  'log': [f'line {i}: ' + 'x' * 60 for i in range(80)]})
            half = len(reply) // 2
            return [(delay, reply[:half]), (delay + self.split_gap, reply[half:])]
        return [(delay, pickle.dumps({'result': command, 'log': []}))]
