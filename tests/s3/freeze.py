#!/usr/bin/env python3
"""An HTTP proxy to an S3 endpoint that stops answering, for good, right
after it has passed on the first successful create of a file's manifest (a
PUT under /files/): what a server sees when it dies between making a file
visible and recording it in the quota ledger. Prints its port, then serves
until killed.  freeze.py UPSTREAM_HOST:PORT"""
import http.client
import http.server
import sys
import threading

upstream = sys.argv[1]
frozen = threading.Event()


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def relay(self):
        if frozen.is_set():
            threading.Event().wait()  # never answers
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else None
        host, port = upstream.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {k: v for k, v in self.headers.items()}
        c.request(self.command, self.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        if self.command == "PUT" and "/files/" in self.path and r.status == 200:
            frozen.set()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        c.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
