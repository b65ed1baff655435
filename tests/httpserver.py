"""A local HTTP server on 127.0.0.1 for download tests: Range support, 404, dropped connections, HTML pages."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    def __init__(self):
        self.files = {}  # path -> bytes
        self.cut_after = {}  # path -> number of bytes after which the first N requests drop the connection
        self.cuts_left = {}
        self.html = set()
        self.json = {}
        self.requests = []


def make_handler(state: Files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            if self.path in state.json:
                body = json.dumps(state.json[self.path]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path not in state.files:
                self.send_error(404, "Not Found")
                return
            data = state.files[self.path]
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "text/html" if self.path in state.html else "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if state.cuts_left.get(self.path, 0) > 0:
                state.cuts_left[self.path] -= 1
                self.wfile.write(body[: state.cut_after[self.path]])
                self.wfile.flush()
                self.connection.shutdown(2)  # drop the connection mid-transfer
                return
            self.wfile.write(body)

    return Handler


class LocalServer:
    def __init__(self):
        self.state = Files()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
