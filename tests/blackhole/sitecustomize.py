"""Put on PYTHONPATH by a test: a name server that never answers for names under .blackhole.test, as a
black-holed resolver does: every lookup waits for a reply that does not come, until the resolver gives up with
"Temporary failure in name resolution" (after 5 s here; glibc's defaults, timeout:5 attempts:2, make it 10 s)."""

import socket
import time

_getaddrinfo = socket.getaddrinfo


def _black_holed(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if isinstance(host, (str, bytes)) and (host.decode() if isinstance(host, bytes) else host).endswith(
        ".blackhole.test"
    ):
        time.sleep(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _black_holed
