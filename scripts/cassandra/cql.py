#!/usr/bin/env python3
"""Tiny CQL client for scripts/cassandra.sh: standard library only, no driver.

Speaks the CQL native protocol v4 over a plain socket (no TLS, no auth, no
compression, no paging), which is all a loopback test node needs.

  cql.py HOST PORT ping          STARTUP -> READY, then read
                                 system.local.release_version; prints it.
                                 The readiness check of cassandra.sh start/status.
  cql.py HOST PORT query STMT    run one statement at consistency ONE and print
                                 the result: rows as "col=value | ..." lines, or
                                 "OK" for DDL/DML. For quick looks (cassandra.sh cql).

Exit codes: 0 ok, 1 server error or unexpected answer, 2 usage, 3 no connection.
"""
import socket
import struct
import sys
import uuid

VERSION = 4
OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08
CONSISTENCY_ONE = 0x0001


class CqlError(Exception):
    pass


def short_string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.stream = 0

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise CqlError("connection closed by the server")
            buf += chunk
        return buf

    def request(self, opcode, body):
        self.stream += 1
        self.sock.sendall(struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body)) + body)
        _version, _flags, _stream, op, length = struct.unpack(">BBhBi", self._recv(9))
        body = self._recv(length)
        if op == OP_ERROR:
            code = struct.unpack(">i", body[:4])[0]
            (n,) = struct.unpack(">H", body[4:6])
            raise CqlError("server error 0x%04x: %s" % (code, body[6:6 + n].decode(errors="replace")))
        return op, body

    def startup(self):
        op, _ = self.request(OP_STARTUP, struct.pack(">H", 1) + short_string("CQL_VERSION") + short_string("3.0.0"))
        if op != OP_READY:
            raise CqlError("STARTUP answered with opcode 0x%02x, not READY" % op)

    def query(self, stmt):
        op, body = self.request(OP_QUERY, long_string(stmt) + struct.pack(">HB", CONSISTENCY_ONE, 0))
        if op != OP_RESULT:
            raise CqlError("QUERY answered with opcode 0x%02x, not RESULT" % op)
        return Result(body)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def type_option(self):
        t = self.short()
        if t == 0x0000:  # custom
            return ("custom", self.string())
        if t in (0x0020, 0x0022):  # list, set
            return (t, self.type_option())
        if t == 0x0021:  # map
            return (t, self.type_option(), self.type_option())
        if t == 0x0030:  # UDT
            self.string(), self.string()
            return (t, [(self.string(), self.type_option()) for _ in range(self.short())])
        if t == 0x0031:  # tuple
            return (t, [self.type_option() for _ in range(self.short())])
        return (t,)


def decode(typ, raw):
    """Best effort text for one value; unknown types are shown as hex."""
    if raw is None:
        return "null"
    t = typ[0]
    if t in (0x0001, 0x000D):  # ascii, varchar
        return raw.decode(errors="replace")
    if t in (0x0002, 0x0005, 0x000B):  # bigint, counter, timestamp (ms)
        return str(struct.unpack(">q", raw)[0])
    if t == 0x0009:
        return str(struct.unpack(">i", raw)[0])
    if t == 0x0013:
        return str(struct.unpack(">h", raw)[0])
    if t == 0x0014:
        return str(struct.unpack(">b", raw)[0])
    if t == 0x0004:
        return "true" if raw != b"\x00" else "false"
    if t == 0x0007:
        return repr(struct.unpack(">d", raw)[0])
    if t == 0x0008:
        return repr(struct.unpack(">f", raw)[0])
    if t in (0x000C, 0x000F):  # uuid, timeuuid
        return str(uuid.UUID(bytes=raw))
    if t == 0x0010:
        return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    if t in (0x0020, 0x0022):  # list, set
        r = Reader(raw)
        items = [decode(typ[1], r.bytes()) for _ in range(r.int())]
        return ("[%s]" if t == 0x0020 else "{%s}") % ", ".join(items)
    if t == 0x0021:  # map
        r = Reader(raw)
        items = ["%s: %s" % (decode(typ[1], r.bytes()), decode(typ[2], r.bytes())) for _ in range(r.int())]
        return "{%s}" % ", ".join(items)
    return "0x" + raw.hex()


class Result:
    VOID, ROWS, SET_KEYSPACE, PREPARED, SCHEMA_CHANGE = 1, 2, 3, 4, 5

    def __init__(self, body):
        r = Reader(body)
        self.kind = r.int()
        self.columns, self.rows = [], []
        if self.kind != self.ROWS:
            return
        flags, ncols = r.int(), r.int()
        if flags & 0x0002:  # has_more_pages: paging state
            r.bytes()
        if flags & 0x0004:  # no_metadata: not asked for, so not expected
            raise CqlError("rows without metadata")
        if flags & 0x0001:  # global table spec
            r.string(), r.string()
        for _ in range(ncols):
            if not flags & 0x0001:
                r.string(), r.string()
            self.columns.append((r.string(), r.type_option()))
        for _ in range(r.int()):
            self.rows.append([r.bytes() for _ in range(ncols)])

    def text_rows(self):
        for row in self.rows:
            yield [(name, decode(typ, raw)) for (name, typ), raw in zip(self.columns, row)]


def main(argv):
    if len(argv) < 4 or argv[3] not in ("ping", "query") or (argv[3] == "query" and len(argv) != 5):
        sys.stderr.write(__doc__)
        return 2
    host, port, mode = argv[1], int(argv[2]), argv[3]
    try:
        conn = Conn(host, port, timeout=10 if mode == "ping" else 60)
    except OSError as e:
        sys.stderr.write("cql: cannot connect to %s:%d: %s\n" % (host, port, e))
        return 3
    try:
        conn.startup()
        if mode == "ping":
            res = conn.query("SELECT release_version FROM system.local")
            rows = list(res.text_rows())
            if not rows:
                raise CqlError("system.local is empty")
            print(rows[0][0][1])
            return 0
        res = conn.query(argv[4])
        if res.kind != Result.ROWS:
            print("OK")
            return 0
        n = 0
        for row in res.text_rows():
            print(" | ".join("%s=%s" % kv for kv in row))
            n += 1
        print("(%d row%s)" % (n, "" if n == 1 else "s"))
        return 0
    except (CqlError, OSError, struct.error) as e:
        sys.stderr.write("cql: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
