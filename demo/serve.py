#!/usr/bin/env python3
"""Serves demo/ like `python3 -m http.server`, plus the two headers that make the page
cross-origin isolated (Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy:
require-corp): only then has the browser SharedArrayBuffer, which the CPU engine's threads need.
Without them the page works too, on one thread.

    python3 demo/serve.py [PORT]     # default 8000; open http://localhost:PORT/
"""
import functools
import http.server
import os
import sys


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    root = os.path.dirname(os.path.abspath(__file__))
    handler = functools.partial(IsolatedHandler, directory=root)
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {root} at http://localhost:{port}/ (cross-origin isolated)")
        server.serve_forever()


if __name__ == "__main__":
    main()
