#!/usr/bin/env python3
"""Print the sytest files that define the tests named on standard input, one file per line.

Usage: sytest-files.py SYTEST_TESTS_DIR < names

A name may carry sytest's " (N subtests)" suffix. Test names in sytest's files are Perl strings that may
interpolate variables ("... with version $version") or be joined from several literals; a variable matches any
text and a name joined from several literals is matched on its first one. A name no file defines is reported
on standard error and the script exits 1, so that the caller does not retry what it cannot find.
"""
import os
import re
import sys

TEST = re.compile(r'^\s*(?:multi_)?test\s*\(?\s*"((?:[^"\\]|\\.)*)"\s*(\S)', re.M)
VARIABLE = re.compile(r'\\\$\w+(?:->\\\{\w+\\\})?|\\\$\\\{\w+\\\}')
SUBTESTS = re.compile(r' \(\d+ subtests\)$')


def patterns(tests_dir):
    for dirpath, _, files in os.walk(tests_dir):
        for name in sorted(files):
            if not name.endswith(".pl"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for m in TEST.finditer(text):
                literal = re.sub(r'\\(.)', r'\1', m.group(1))
                pattern = VARIABLE.sub(".+", re.escape(literal))
                whole = m.group(2) in ",)"
                yield os.path.relpath(path, os.path.dirname(tests_dir)), re.compile(pattern + ("$" if whole else ""))


def main():
    tests_dir = os.path.abspath(sys.argv[1])
    known = list(patterns(tests_dir))
    files, unknown = [], []
    for line in sys.stdin:
        name = SUBTESTS.sub("", line.rstrip("\n"))
        if not name:
            continue
        found = [path for path, pattern in known if pattern.match(name)]
        if not found:
            unknown.append(name)
        for path in found:
            if path not in files:
                files.append(path)
    for name in unknown:
        print("sytest-files.py: no test file defines %r" % name, file=sys.stderr)
    print("\n".join(files))
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
