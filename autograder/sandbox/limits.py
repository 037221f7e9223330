"""The sandbox's limits and the errors it reports (imported by every side of it)."""
from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE = 64 << 20  # bytes a child may send in one answer
UID_SLOTS = 4096  # children cycle through uid_base .. uid_base + UID_SLOTS - 1


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 30.0  # wall-clock seconds for one cell (nbgrader's default)
    check_timeout: float = 60.0  # wall-clock seconds for all cases of one check
    submission_timeout: float = 600.0  # wall-clock seconds for one submission: cells, restarts and checks
    max_restarts: int = 12  # new children one submission may need (past cells or checks that kill theirs)
    cpu_seconds: int = 600  # RLIMIT_CPU for one child
    memory_bytes: int = 4 << 30  # RLIMIT_AS headroom above the child's size at start (CPU only)
    max_processes: int = 256  # RLIMIT_NPROC, per child uid (holds once the child is not root)
    file_bytes: int = 64 << 20  # RLIMIT_FSIZE: the largest file a child may write
    scratch_bytes: int = 256 << 20  # size of the child's private tmpfs at /tmp
    uid_base: int = 1_900_000_000  # a root grader runs children as uid_base + k (no such user exists)
    hide: tuple[str, ...] = ()  # more paths children must not see (other copies of the course...)
    isolate: bool = True  # False: resource limits only, no namespaces or uid change (debugging)


class ChildLost(Exception):
    """The child died or stopped answering: the message says which, `kind` is its
    problem kind (autograder.problems.KINDS): "timeout" or "crash"."""

    def __init__(self, reason: str, kind: str = "crash"):
        super().__init__(reason)
        self.kind = kind


class SandboxError(RuntimeError):
    """The sandbox itself could not start (not the student's fault)."""
