#!/usr/bin/env python3
"""stallfs: a tiny read-only FUSE filesystem speaking the raw /dev/fuse
protocol (no libfuse binding), for tests/fuse_live.rs.

It serves, at its root:
  busybox    a copy of the file given with --exe (an executable)
  script.sh  "#!/bin/sh\\nexit 0\\n"
  argv.bin   an argv array for an execve, to be mapped at ARGV_BASE

Every request is answered, except those from a thread of the process given
with --stall-pid (fuse_in_header.pid is the calling thread's id): those are
logged and never answered, as a hostile server would. Other processes'
requests (the exec itself, the kernel loading the binary) are served, so the
kernel is never stuck. Attributes are valid for 0 s, so every stat is a
request. Each request is logged to --log as
"<opcode> <nodeid> <pid> <tgid> served|STALLED".

Mounted through fusermount3 (the fuse3 package), which passes the /dev/fuse
fd back over _FUSE_COMMFD, as libfuse does. Runs until killed; unmounting is
the caller's job (fusermount3 -u -z), also after a kill.

usage: stallfs.py MOUNTPOINT --exe FILE --stall-pid PID --log FILE
       stallfs.py exec-argv MOUNTPOINT/argv.bin
         maps argv.bin at ARGV_BASE without touching it and execs /bin/sh
         with its argv (/bin/sh -c "sleep 1" argv-from-fuse): the argv pages are read
         first by whoever reads the exec'ing task's memory.
"""

import argparse
import errno
import os
import socket
import stat
import struct
import subprocess
import sys

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
# ino size blocks atime mtime ctime atimens mtimens ctimens mode nlink uid gid rdev blksize flags
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")

LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE = 1, 2, 3, 14, 15, 17, 18
GETXATTR, LISTXATTR, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = 22, 23, 25, 26, 27, 28, 29
ACCESS, INTERRUPT, DESTROY, BATCH_FORGET, READDIRPLUS = 34, 36, 38, 42, 44
NAMES = {v: k for k, v in list(globals().items()) if isinstance(v, int) and k.isupper()}
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

ROOT = 1


def attr(ino, mode, size):
    return ATTR.pack(ino, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                     mode, 1, 0, 0, 0, 4096, 0)


# Where argv.bin expects to be mapped (MAP_FIXED) by its user.
ARGV_BASE = 0x200000000


def argv_page():
    """An argv array and its strings, valid once mapped at ARGV_BASE: an
    execve whose argv lives in file pages nobody has touched yet. The
    program lingers a second so /proc/<pid>/cmdline can still be read."""
    page = bytearray(4096)
    strings = [b"/bin/sh", b"-c", b"sleep 1", b"argv-from-fuse"]
    off = 64
    ptrs = []
    for a in strings:
        page[off:off + len(a) + 1] = a + b"\0"
        ptrs.append(ARGV_BASE + off)
        off += len(a) + 1
    struct.pack_into("<" + "Q" * (len(ptrs) + 1), page, 0, *ptrs, 0)
    return bytes(page)


class Fs:
    def __init__(self, exe, stall_pid, log):
        with open(exe, "rb") as f:
            prog = f.read()
        self.files = {
            b"busybox": (2, prog),
            b"script.sh": (3, b"#!/bin/sh\nexit 0\n"),
            b"argv.bin": (4, argv_page()),
        }
        self.by_ino = {ino: data for ino, data in self.files.values()}
        self.stall_pid = stall_pid
        self.log = open(log, "a", buffering=1)

    def tgid(self, pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Tgid:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stat_of(self, ino):
        if ino == ROOT:
            return attr(ROOT, stat.S_IFDIR | 0o755, 0)
        data = self.by_ino.get(ino)
        if data is None:
            return None
        return attr(ino, stat.S_IFREG | 0o755, len(data))

    def handle(self, op, nodeid, body):
        """(error, payload) for one request."""
        if op == INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            # major minor max_readahead flags max_background congestion
            # max_write time_gran max_pages map_alignment flags2
            # max_stack_depth unused[6]
            out = struct.pack("<IIIIHHIIHHII24x", 7, min(minor, 31), readahead,
                              0, 16, 12, 1 << 16, 1, 0, 0, 0, 0)
            return 0, out
        if op == LOOKUP:
            name = body.split(b"\0", 1)[0]
            if nodeid != ROOT or name not in self.files:
                return -errno.ENOENT, b""
            ino, _ = self.files[name]
            # nodeid generation entry_valid attr_valid entry_nsec attr_nsec attr
            return 0, struct.pack("<QQQQII", ino, 1, 0, 0, 0, 0) + self.stat_of(ino)
        if op == GETATTR:
            a = self.stat_of(nodeid)
            if a is None:
                return -errno.ENOENT, b""
            return 0, struct.pack("<QII", 0, 0, 0) + a
        if op in (OPEN, OPENDIR):
            return 0, struct.pack("<QII", 0, 0, 0)
        if op == READ:
            _fh, off, size = struct.unpack_from("<QQI", body)
            data = self.by_ino.get(nodeid, b"")
            return 0, data[off:off + size]
        if op in (READDIR, READDIRPLUS):
            return 0, b""
        if op == STATFS:
            return 0, struct.pack("<QQQQQIIII24x", 1, 0, 0, 3, 0, 4096, 255, 4096, 0)
        if op in (RELEASE, RELEASEDIR, FLUSH, ACCESS, DESTROY):
            return 0, b""
        return -errno.ENOSYS, b""

    def serve(self, fd):
        while True:
            try:
                req = os.read(fd, (1 << 17) + 4096)
            except OSError as e:
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # ENOENT: a request interrupted before we read it
                if e.errno == errno.ENODEV:
                    return  # unmounted
                raise
            _len, op, unique, nodeid, _uid, _gid, pid, _ext, _pad = IN_HEADER.unpack_from(req)
            body = req[IN_HEADER.size:]
            tgid = self.tgid(pid)
            stall = self.stall_pid and tgid == self.stall_pid and op != INIT
            name = NAMES.get(op, str(op))
            self.log.write(f"{name} {nodeid} {pid} {tgid} {'STALLED' if stall else 'served'}\n")
            if stall or op in NO_REPLY:
                continue
            err, payload = self.handle(op, nodeid, body)
            if err:
                payload = b""
            out = OUT_HEADER.pack(OUT_HEADER.size + len(payload), err, unique) + payload
            try:
                os.write(fd, out)
            except OSError as e:
                # ENOENT: the request was interrupted and is gone.
                if e.errno != errno.ENOENT:
                    raise


def mount(mountpoint):
    """fusermount3 opens /dev/fuse, mounts, and sends the fd back."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    os.set_inheritable(theirs.fileno(), True)
    env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
    p = subprocess.Popen(
        ["fusermount3", "-o", "fsname=stallfs,subtype=stallfs,allow_other,ro",
         "--", mountpoint],
        env=env, pass_fds=(theirs.fileno(),))
    theirs.close()
    _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    if p.wait() != 0 or not fds:
        sys.exit(f"stallfs: fusermount3 failed ({p.returncode})")
    return fds[0]


def exec_argv(path):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long]
    fd = os.open(path, os.O_RDONLY)
    prot_read, map_private, map_fixed = 1, 0x02, 0x10
    got = libc.mmap(ARGV_BASE, 4096, prot_read, map_private | map_fixed, fd, 0)
    if got != ARGV_BASE:
        sys.exit(f"mmap: {ctypes.get_errno()}")
    libc.execve(b"/bin/sh", ctypes.c_void_p(ARGV_BASE), None)
    sys.exit(f"execve: {ctypes.get_errno()}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "exec-argv":
        exec_argv(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("mountpoint")
    ap.add_argument("--exe", required=True)
    ap.add_argument("--stall-pid", type=int, default=0)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    fs = Fs(a.exe, a.stall_pid, a.log)
    fd = mount(a.mountpoint)
    fs.log.write("MOUNTED\n")
    fs.serve(fd)


if __name__ == "__main__":
    main()
