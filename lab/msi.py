"""A compute instance's local managed identity endpoint, in the lab's node namespace: `python -m lab.msi PORT`.

Azure ML serves it on the instance's loopback and names it in MSI_ENDPOINT (with MSI_SECRET, the
header its callers must send). The lab's stands in for reachability only: every request without
the secret header is refused with 401 and a JSON error, as an endpoint that checks its caller
would (the agent sends no secret and asks for no token; any answer proves the path). Prints
`ready` once bound; exits when stdin closes (the lab holds the other end)."""

from __future__ import annotations

import http.server
import json
import sys
import threading

from lab.addresses import MSI_PATH


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, error = (404, "not_found") if not self.path.startswith(MSI_PATH) else (401, "unauthorized")
        body = json.dumps({"error": error, "error_description": "the lab's identity endpoint mints no tokens "
                           "for a caller without the secret header"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(argv[0])), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
