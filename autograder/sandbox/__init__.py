"""The sandbox: the limited processes that run the submissions, one module per side.

Three processes, and the modules whose code runs in each:

    grader (trusted)    handle.py      ZygoteHandle: start the zygote, hand it the inputs, ask for children
                        submission.py  SandboxedSubmission: drive one submission's child (an executor)
    zygote              bootstrap.py   its first lines (user and PID namespaces before torch starts a thread)
                        newroot.py     a root without the course, then exec (standard library only)
                        zygote.py      the zygote's state, warm-up and fork loop
    child (untrusted)   child.py       the child's set-up after the fork and its request loop
    zygote and child    policy.py      the isolation policy: what is hidden, locked, limited
                        syscalls.py    Linux system calls through ctypes
    all                 limits.py      Limits and the errors the sandbox reports

Everything a child sends crosses the one codec of autograder/answer.py and is
validated there; nothing the child sends is unpickled. See docs/sandbox.md for
what each layer stops and what it does not, and docs/design.md for the data flow.
"""
from autograder.sandbox.handle import ZygoteHandle
from autograder.sandbox.limits import UID_SLOTS, ChildLost, Limits, SandboxError
from autograder.sandbox.policy import secret_paths
from autograder.sandbox.submission import SandboxedSubmission

__all__ = ["UID_SLOTS", "ChildLost", "Limits", "SandboxError", "SandboxedSubmission",
           "ZygoteHandle", "secret_paths"]
