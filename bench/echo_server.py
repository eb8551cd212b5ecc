"""Stand-in line echo server (stdlib only), until socs_tcp.sim.echo lands.

Prints ``PORT <n>`` when listening; exits when its stdin closes.
"""

import selectors
import socket
import sys


def main() -> None:
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(('127.0.0.1', 0))
    lsock.listen(128)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, 'listen')
    sel.register(sys.stdin, selectors.EVENT_READ, 'stdin')
    print(f'PORT {lsock.getsockname()[1]}', flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == 'listen':
                conn, _ = lsock.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, 'conn')
            elif key.data == 'stdin':
                if not sys.stdin.readline():
                    return
            else:
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b''
                if data:
                    key.fileobj.sendall(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()


if __name__ == '__main__':
    main()
