"""A stand-in for jupyterhub-singleuser that starts at once: binds where JUPYTERHUB_SERVICE_URL says.

TINY_EXIT_CODE=n exits at once with n; TINY_IGNORE_SIGTERM=1 makes the outpost escalate to SIGKILL;
TINY_DELAY=s waits s seconds before it listens (a slow start). `GET /...?echo=NAME` also answers the
value of its variable NAME (null when unset): what of the hub's env reached the server.
"""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        limits = {k: v for k, v in os.environ.items() if k.startswith(("MEM_", "CPU_"))}
        reply = {"path": self.path, "user": os.environ.get("JUPYTERHUB_USER", ""), "limits": limits}
        echoed = parse_qs(urlparse(self.path).query).get("echo", [])
        if echoed:
            reply["echo"] = {name: os.environ.get(name) for name in echoed}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print("request", self.path, flush=True)


def main() -> None:
    if "TINY_EXIT_CODE" in os.environ:
        print("exiting on purpose", flush=True)
        sys.exit(int(os.environ["TINY_EXIT_CODE"]))
    if os.environ.get("TINY_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(float(os.environ.get("TINY_DELAY", "0")))
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 8888), Handler)
    print(f"tiny server for {os.environ.get('JUPYTERHUB_USER')} on {url.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
