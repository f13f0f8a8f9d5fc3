"""The classic tutorial's client on the other side of one memcached.

Usage: pymemcache_peer.py HOST PORT [CA_FILE]

With CA_FILE, it talks TLS, verifying the server against that CA (the one
peer client with TLS: libmemcached has none).

Reads the items tiercache wrote (tc_bytes, tc_text, tc_int) and checks their
types and values under pymemcache's serde convention (flags 0 bytes, 16 text,
2 int), then writes py_bytes, py_text and py_int for tiercache to read back.
Exits non-zero, saying what differed, on any mismatch.
"""
import ssl
import sys

from pymemcache.client.base import Client
from pymemcache import serde


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    tls = ssl.create_default_context(cafile=sys.argv[3]) if len(sys.argv) > 3 else None
    client = Client((host, port), serde=serde.pickle_serde, connect_timeout=2, timeout=2,
                    tls_context=tls)
    expected = {
        "tc_bytes": b"\x00\x01raw bytes\r\n",
        "tc_text": "h\u00e9llo, w\u00f6rld",
        "tc_int": 42,
    }
    failures = []
    for key, want in expected.items():
        got = client.get(key)
        if got != want or type(got) is not type(want):
            failures.append(f"{key}: got {got!r} ({type(got).__name__}), want {want!r}")
    client.set("py_bytes", b"\x00py raw", noreply=False)
    client.set("py_text", "t\u00ebxt from python", noreply=False)
    client.set("py_int", 7, noreply=False)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
