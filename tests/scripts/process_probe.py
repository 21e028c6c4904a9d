"""What a process started as `python -m tests.scripts.process_probe` sees of itself, as JSON on stdout.

tests/test_forkserver.py runs it both as a fresh interpreter and as a fork of stack/forkserver.py:
the two must see the same. `--exit N` exits with N; `--sleep` waits for a signal instead;
`--echo` writes what it reads from stdin to stderr, upper-cased.
"""

import gc
import json
import os
import signal
import sys

if __name__ == "__main__":
    seen = {
        "name": __name__,
        "argv": sys.argv[1:],
        "argv0": os.path.basename(sys.argv[0]),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "environ": dict(os.environ),
        "stdin": os.readlink("/proc/self/fd/0"),
        "own_session": os.getsid(0) == os.getpid(),
        "gc_enabled": gc.isenabled(),
        "django_configured": "django.conf" in sys.modules and sys.modules["django.conf"].settings.configured,
        "project_modules": sorted(name for name in sys.modules if name.split(".")[0] in ("api", "core", "project")),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
    }
    print(json.dumps(seen), flush=True)
    if "--echo" in sys.argv:
        sys.stderr.write(sys.stdin.read().upper())
    if "--sleep" in sys.argv:
        signal.pause()
    sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0)
