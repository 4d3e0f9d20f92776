"""lora-search dashboard: optuna-dashboard on the storage the searches write to."""

from __future__ import annotations

import argparse

from ._options import add_storage_option

DESCRIPTION = """\
Serve optuna-dashboard on the same storage that 'lora-search run' writes to, and print
its address. Open it while a search runs to watch trials arrive: the optimization
history of the study's metric, each trial's intermediate values (where pruning stopped
it), parameter importances and the study's stored settings (user attributes
lora_search.*). The study's Note holds the scenario, the baseline and the best trial's
gain over it, rewritten at the end of each 'lora-search run'.

The server listens on the loopback address only unless --host says otherwise; it has
no login, so expose it beyond this machine only on a network you trust (or reach it
through an SSH tunnel: ssh -L 8080:127.0.0.1:8080 HOST). Stop it with Ctrl-C.

examples:
  lora-search dashboard
  lora-search dashboard --port 8081 --storage sqlite:///elsewhere.db
  lora-search dashboard --port 0          (any free port; the address is printed)
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_storage_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080; 0 picks a free one)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 0 to 65535 (0 picks a free one)")
    return port


def run(args: argparse.Namespace) -> int:
    import errno
    import signal
    import socket
    import sys
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    from ._errors import SearchError
    from ._storage import open_storage, storage_label

    storage = open_storage(args.storage, create=False)
    app = optuna_dashboard.wsgi(storage)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *values: object) -> None:  # one line per request is noise here
            pass

    class ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # the page loads its assets in parallel

    try:
        server = make_server(args.host, args.port, app, server_class=ThreadingServer, handler_class=QuietHandler)
    except OSError as error:
        # an address this host cannot resolve or does not have, or a port that is taken or reserved
        fix = "give a name or address of this host as --host" if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL else "try another --port"
        raise SearchError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error} ({fix})") from None
    # Ctrl-C and SIGTERM (a service manager, docker stop) both stop it cleanly, even where the
    # process was started with SIGINT ignored (as a background job of a script is); set before
    # the address is printed, since whoever reads it may stop the server at once
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    host, port = server.server_address[:2]
    shown_host = f"[{host}]" if ":" in str(host) else host
    try:
        print(f"optuna-dashboard for {storage_label(args.storage)} at http://{shown_host}:{port}/  (Ctrl-C stops it)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {args.host}: anyone who can reach this address sees and can edit the studies",
                  file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
