"""The zygote's first lines: the command the grader's handle runs as `python -c BOOTSTRAP`.

A text, not code this process runs: the grader passes it to a fresh Python,
after the text of newroot.py (the standard library only: nothing of this
package or torch is imported before the zygote has a root of its own).
"""
# Run by the zygote before anything else: a user namespace can only be entered by a
# single-threaded process, and importing torch starts a thread. Not root, the zygote
# becomes PID 1 of a PID namespace owned by its user namespace (so that it may
# give each child a PID namespace of its own); this bootstrap process waits for it.
# Then (isolating) it builds a root without the course (newroot.enter) and execs
# STAGE2 there; if that fails, it goes on here and the zygote warns.
BOOTSTRAP = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: it goes when the grader goes
if sys.argv[2] == "isolate" and os.geteuid() != 0:
    uid, gid = os.geteuid(), os.getegid()
    pidns = libc.unshare(0x10000000 | 0x20000000) == 0  # CLONE_NEWUSER | CLONE_NEWPID
    if pidns or libc.unshare(0x10000000) == 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        os.environ["AUTOGRADER_USERNS"] = "ok"
        if pidns:
            pid = os.fork()
            if pid:
                os.close(0)
                os.close(int(sys.argv[1]))
                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                os._exit(code if code >= 0 else 128 - code)
            libc.prctl(1, 9, 0, 0, 0)
    else:
        os.environ["AUTOGRADER_USERNS"] = "unshare(CLONE_NEWUSER): " + os.strerror(ctypes.get_errno())
if sys.argv[2] == "isolate":
    plan = json.loads(sys.argv[3])
    if os.environ.get("AUTOGRADER_USERNS", "ok") == "ok":
        enter(plan, sys.argv[1:3], STAGE2)  # returns only if it failed
    else:
        os.environ["AUTOGRADER_NEWROOT"] = "no root of its own (no namespaces)"
    os.environ["AUTOGRADER_HIDE"] = json.dumps(plan["hide"])
    del plan
from autograder.sandbox.zygote import zygote_main
zygote_main()
"""

# What runs in the new root, exec'd by newroot.enter: argv is (control socket, mode).
STAGE2 = """
from autograder.sandbox.zygote import zygote_main
zygote_main()
"""
