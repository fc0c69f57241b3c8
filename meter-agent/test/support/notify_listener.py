"""systemd's side of sd_notify(3) for tests: binds a unix datagram socket (a path, or an abstract
name given as @name, as NOTIFY_SOCKET has it), prints "bound", then every datagram received on a
line of its own, until killed."""
import socket
import sys

address = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("\0" + address[1:] if address.startswith("@") else address)
print("bound", flush=True)
while True:
    print(sock.recv(4096).decode().replace("\n", " "), flush=True)
