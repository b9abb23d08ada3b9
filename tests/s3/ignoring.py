#!/usr/bin/env python3
"""A deliberately broken S3 stand-in for the self-check's negative case: it
stores objects in memory and ignores If-None-Match, as Garage 2.5 and s3rver
do. Prints its port, then serves until killed.  ignoring.py"""
import http.server
import sys

objects = {}


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0"))
        objects[self.path] = self.rfile.read(n)
        self.send_response(200)
        self.send_header("ETag", '"%d"' % len(objects))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self):
        objects.pop(self.path, None)
        self.send_response(204)
        self.end_headers()

    def do_GET(self):
        body = objects.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
