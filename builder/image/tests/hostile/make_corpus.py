#!/usr/bin/env python3
"""Write the regression corpus of hostile tar archives for imgmode's extractor.

Usage: make_corpus.py OUT_DIR ESCAPE_DIR

One archive per bug class, named after the CVE or the class it reproduces. ESCAPE_DIR is an
absolute directory the archives try to reach (it holds a file `secret`); the tests unpack each
archive into a sibling of it and prove nothing there changed. Archives are built with Python's
tarfile (or by hand where tarfile refuses to write the bad form), so the corpus does not depend
on the extractor's own writer.
"""

import gzip
import io
import os
import sys
import tarfile


def info(name, kind=tarfile.REGTYPE, data=b"", **kw):
    t = tarfile.TarInfo(name)
    t.type = kind
    t.size = len(data) if kind == tarfile.REGTYPE else 0
    t.mode = kw.pop("mode", 0o644)
    t.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(t, k, v)
    return t, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write(path, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tf:
        for t, data in entries:
            tf.addfile(t, data)


def main(out, escape):
    os.makedirs(out, exist_ok=True)
    rel = "../" + os.path.basename(escape)  # from the target (a sibling of ESCAPE_DIR)
    a = lambda name: os.path.join(out, name)
    pwn = b"written by a hostile archive\n"

    # GNU tar directory traversal through ".." (also "Zip Slip").
    write(a("CVE-2001-1267-dotdot-path.tar"), [info(rel + "/dotdot", data=pwn)])
    # ".." hidden in the middle of a name (GNU tar's contains_dot_dot check).
    write(a("CVE-2007-4131-inner-dotdot.tar"), [info("usr/../../" + os.path.basename(escape) + "/inner", data=pwn)])
    # absolute names with repeated slashes (node-tar's stripping bug): land inside, never outside.
    write(a("CVE-2021-32804-absolute-path.tar"), [info("////" + escape.lstrip("/") + "/absolute", data=pwn)])
    # a symlink to outside, then a file through it (node-tar's symlink cache poisoning).
    write(
        a("CVE-2021-32803-symlink-then-file.tar"),
        [info("link", tarfile.SYMTYPE, linkname=rel), info("link/through-symlink", data=pwn)],
    )
    # the same through an absolute symlink.
    write(
        a("symlink-absolute-then-file.tar"),
        [info("abs", tarfile.SYMTYPE, linkname=escape), info("abs/through-absolute", data=pwn)],
    )
    # a symlink to outside, then a directory of the same name with mode 0777 (chmod through it).
    write(
        a("symlink-then-directory-chmod.tar"),
        [info("link", tarfile.SYMTYPE, linkname=rel), info("link", tarfile.DIRTYPE, mode=0o777)],
    )
    # a symlink to outside, then a directory created beneath it.
    write(
        a("symlink-then-directory.tar"),
        [info("link", tarfile.SYMTYPE, linkname=rel), info("link/newdir", tarfile.DIRTYPE, mode=0o755)],
    )
    # a symlink to outside, then a hard link whose target passes through it (tar-fs).
    write(
        a("CVE-2024-12905-symlink-hardlink-target.tar"),
        [info("link", tarfile.SYMTYPE, linkname=rel), info("stolen", tarfile.LNKTYPE, linkname="link/secret")],
    )
    # a hard link straight to a file outside.
    write(
        a("hardlink-escape.tar"),
        [info("stolen", tarfile.LNKTYPE, linkname=rel + "/secret")],
    )
    # a hard link to an absolute path (stripped like names: it names a file the archive lacks).
    write(
        a("hardlink-absolute.tar"),
        [info("stolen", tarfile.LNKTYPE, linkname=escape + "/secret")],
    )
    # a hard link to a directory, then a file written through it (no filesystem allows the
    # link; an extractor that emulated it would alias two trees).
    write(
        a("hardlink-to-directory.tar"),
        [info("etc", tarfile.DIRTYPE, mode=0o755), info("alias", tarfile.LNKTYPE, linkname="etc"), info("alias/passwd", data=pwn)],
    )
    # a link entry followed by a regular file of the same name (node-tar's hardlink overwrite).
    write(
        a("CVE-2018-20834-link-then-file.tar"),
        [info("name", tarfile.SYMTYPE, linkname=rel + "/secret"), info("name", data=pwn)],
    )
    # a symlink named "." (umoci) and one named "/".
    write(a("CVE-2021-29136-symlink-named-dot.tar"), [info(".", tarfile.SYMTYPE, linkname=escape)])
    write(a("symlink-named-slash.tar"), [info("/", tarfile.SYMTYPE, linkname=escape)])
    # PAX path and linkpath records overriding a harmless header name.
    t, d = info("innocent", data=pwn)
    t.pax_headers = {"path": rel + "/pax-path"}
    write(a("pax-path-override.tar"), [(t, d)])
    t, d = info("innocent-link", tarfile.LNKTYPE, linkname="harmless")
    t.pax_headers = {"linkpath": rel + "/secret"}
    write(a("pax-linkpath-override.tar"), [info("harmless", data=b"x"), (t, d)])
    # a GNU long name (type L record) carrying "..".
    write(a("gnu-longname-dotdot.tar"), [info(rel + "/" + "l" * 120, data=pwn)], fmt=tarfile.GNU_FORMAT)
    # device nodes and FIFOs outside the places they belong.
    write(
        a("device-node-outside-dev.tar"),
        [info("etc/disk", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666)],
    )
    write(a("fifo-in-usr.tar"), [info("usr/bin/fifo", tarfile.FIFOTYPE)])
    # a setuid root program (kept only where the format allows it).
    write(a("setuid-root-binary.tar"), [info("usr/bin/pwn", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0)])
    # a name that is not UTF-8.
    write(a("non-utf8-name.tar"), [info("caf\udce9", data=pwn)], fmt=tarfile.GNU_FORMAT)
    # a header claiming a petabyte: refused before a byte is read.
    t, _ = info("huge")
    t.size = 1 << 50
    with open(a("absurd-size-header.tar"), "wb") as f:
        f.write(t.tobuf(tarfile.GNU_FORMAT))
        f.write(b"\0" * 1024)
    # a decompression bomb: 512 MiB of zeros in a gzip of half a megabyte.
    with gzip.open(a("decompression-bomb.tar.gz"), "wb", compresslevel=9) as g:
        t, _ = info("bomb")
        t.size = 512 << 20
        g.write(t.tobuf(tarfile.GNU_FORMAT))
        zero = b"\0" * (1 << 20)
        for _ in range(512):
            g.write(zero)
        g.write(b"\0" * 1024)
    # OCI whiteouts naming ".." and "." (remove the target's parent or the target itself).
    write(a("whiteout-dotdot.tar"), [info("etc/.wh...", data=b"")])
    write(a("whiteout-dot.tar"), [info(".wh..", data=b"")])


if __name__ == "__main__":
    if len(sys.argv) != 3 or not os.path.isabs(sys.argv[2]):
        sys.exit("usage: make_corpus.py OUT_DIR ABSOLUTE_ESCAPE_DIR")
    main(sys.argv[1], sys.argv[2])
