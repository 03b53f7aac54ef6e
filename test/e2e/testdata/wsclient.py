# A websocket client for the e2e tests: connects to argv[1] (host:port) with Host argv[2],
# upgrades /ws, sends each remaining argument as a text message and prints each echo on a
# line. Exits non-zero on any protocol error.
import base64, hashlib, os, socket, struct, sys

addr, host, messages = sys.argv[1], sys.argv[2], sys.argv[3:]
h, p = addr.rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=10)
key = base64.b64encode(os.urandom(16))
s.sendall(b"GET /ws HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
f = s.makefile("rb")
status = f.readline()
if b" 101 " not in status:
    sys.exit("no upgrade: " + status.decode(errors="replace").strip())
headers = {}
while True:
    line = f.readline().strip()
    if not line:
        break
    k, _, v = line.partition(b":")
    headers[k.strip().lower()] = v.strip()
want = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
if headers.get(b"sec-websocket-accept") != want:
    sys.exit("bad Sec-WebSocket-Accept")
for m in messages:
    data, mask = m.encode(), os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))
    b0, b1 = f.read(2)
    print(f.read(b1 & 0x7F).decode(), flush=True)
s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
if f.read(2) != b"\x88\x00":
    sys.exit("no close frame")
