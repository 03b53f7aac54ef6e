# The e2e tests' guest web server: files from the current directory, and a websocket
# echo at /ws (RFC 6455, text and binary frames, unfragmented), on the port in argv[1].
import base64, hashlib, http.server, struct, sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's transport uses it

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/ws":
            return super().do_GET()
        key = self.headers.get("Sec-WebSocket-Key", "").encode()
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self.send_error(400, "want a websocket upgrade")
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            while True:
                b0, b1 = read_exact(self.rfile, 2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", read_exact(self.rfile, 2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", read_exact(self.rfile, 8))[0]
                mask = read_exact(self.rfile, 4) if b1 & 0x80 else b"\0\0\0\0"
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(read_exact(self.rfile, n)))
                opcode = b0 & 0x0F
                if opcode == 8:  # close: answer it and end
                    self.wfile.write(b"\x88\x00")
                    return
                header = bytes([0x80 | opcode])
                if n < 126:
                    header += bytes([n])
                elif n < 65536:
                    header += bytes([126]) + struct.pack(">H", n)
                else:
                    header += bytes([127]) + struct.pack(">Q", n)
                self.wfile.write(header + payload)
                self.wfile.flush()
        except (EOFError, ConnectionError):
            return


http.server.ThreadingHTTPServer(("", int(sys.argv[1])), Handler).serve_forever()
