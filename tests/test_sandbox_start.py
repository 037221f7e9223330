"""The sandbox starts wherever Python lives, or says in one line why it cannot.

The zygote builds a root of its own without the course (newroot.py), with an
empty /tmp. Python may live in the course (its .venv), elsewhere on disk, under
/tmp (another checkout's venv, a CI runner's tool venv) or be the system's
Python with PYTHONPATH: each starts here with a root of its own and no warning,
and a class graded with a venv under /tmp gets the scores the course's venv gives.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autograder.course import course_root
from tests.test_runner import STEM, _append_to, _notebook_with, _write

ROOT = course_root()
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
BASE = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)

# Started in the Python under test: a zygote whose root leaves out the course, its mode and warning.
START = f"""
import json, sys
from pathlib import Path
from autograder.sandbox import Limits, ZygoteHandle, secret_paths
root = Path({str(ROOT)!r})
with ZygoteHandle({STEM!r}, device="cpu", limits=Limits(), hide=secret_paths(root), conceal=[root]) as z:
    z.start({{}})
    print(json.dumps([z.mode, z.warning, sys.prefix]))
"""


def _site_copy(dest: Path) -> Path:
    """This venv's site-packages at `dest`, hard-linked (seconds, no space): real files there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["cp", "-al", str(SITE), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot hard-link site-packages into {dest.parent} (another file system?): {done.stderr}")
    return dest


def _venv(where: Path) -> Path:
    """A virtual environment at `where` with this one's packages: its python."""
    subprocess.run([BASE, "-m", "venv", "--without-pip", str(where)], check=True)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = where / "lib" / ver / "site-packages"
    shutil.rmtree(site)
    _site_copy(site)
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def pythons(tmp_path_factory):
    """name -> (python, environment): the course's venv, a venv under /tmp, a venv elsewhere on
    disk (not /tmp, not the course), the system's Python with PYTHONPATH under /tmp."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests run outside a virtual environment (make test makes one)")
    tmp = tmp_path_factory.mktemp("pythons")
    assert str(tmp.resolve()).startswith("/tmp/"), tmp  # the case the issue is about
    elsewhere = Path(tempfile.mkdtemp(prefix="autograder-test-venv-", dir="/var/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    found = {
        "course venv": (Path(sys.executable), env),
        "venv under /tmp": (_venv(tmp / "venv"), env),
        "venv elsewhere on disk": (_venv(elsewhere / "venv"), env),
        # PYTHONPATH's folders are not site folders (no .pth runs): the checkout itself is on it
        "system python, PYTHONPATH under /tmp": (Path(BASE), {**env, "PYTHONPATH": os.pathsep.join(
            [str(_site_copy(tmp / "site")), str(ROOT)])}),
    }
    yield found
    shutil.rmtree(elsewhere, ignore_errors=True)


@pytest.mark.parametrize("where", ["course venv", "venv under /tmp", "venv elsewhere on disk",
                                   "system python, PYTHONPATH under /tmp"])
def test_the_sandbox_starts_with_a_root_of_its_own_wherever_python_lives(pythons, where):
    python, env = pythons[where]
    done = subprocess.run([str(python), "-c", START], cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    mode, warning, prefix = json.loads(done.stdout.strip().splitlines()[-1])
    assert mode in ("root", "userns"), mode
    assert warning == "", warning  # a root of its own: nothing to warn of
    assert done.stderr == "", done.stderr[-3000:]
    if where != "course venv":
        assert not os.path.realpath(prefix).startswith(str(ROOT.resolve()) + "/")


def test_a_class_graded_with_a_venv_under_tmp_scores_as_the_course_venv(pythons, tmp_path):
    from autograder.grading import grade_class

    subs = tmp_path / "submitted"
    _write(subs, "honest", _notebook_with(lambda nb: None))
    _write(subs, "wrong_l1", _notebook_with(_append_to(
        "l1_loss", "def l1_loss(input, target, reduction='mean'):\n    return input.sum() * 0")))
    python, env = pythons["venv under /tmp"]
    out = tmp_path / "out_tmp_venv"
    done = subprocess.run([str(python), "-m", "autograder", "grade", STEM, "--submissions", str(subs),
                           "--out", str(out), "--device", "cpu", "--jobs", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "no root of its own" not in done.stderr, done.stderr[-2000:]
    with open(out / "grades.csv") as f:
        theirs = {(r["student_id"], r.get("assignment", STEM)): r["score"] for r in csv.DictReader(f)}
    here = grade_class(STEM, submissions=subs, out=tmp_path / "out_here", device="cpu", jobs=2, progress=False)
    ours = {(r.student_id, STEM): r for r in here}
    assert set(theirs) == set(ours)
    for key, r in ours.items():
        assert float(theirs[key]) == pytest.approx(r.score), key
    assert ours[("wrong_l1", STEM)].score < ours[("honest", STEM)].score == ours[("honest", STEM)].max_score


def test_a_zygote_that_cannot_start_says_its_own_first_error():
    from autograder.sandbox import Limits, SandboxError, ZygoteHandle

    with pytest.raises(SandboxError) as err:
        with ZygoteHandle("no_such_chapter", device="cpu", limits=Limits(), conceal=[ROOT]) as z:
            z.start({})
    assert "ModuleNotFoundError" in str(err.value) and "no_such_chapter" in str(err.value), err.value
    assert "exit code" not in str(err.value)


def test_python_missing_from_the_root_falls_back_with_one_line(monkeypatch, capfd):
    """If the root would lack the interpreter (here: the plan forgets Python's layout and the
    venv lies under /tmp), the zygote is not lost: it covers the secrets and says why."""
    from autograder.sandbox import Limits, ZygoteHandle, newroot, secret_paths

    monkeypatch.setattr(newroot, "python_layout", lambda pythonpath: [])
    real_plan = newroot.plan

    def plan_with_python_under_tmp(*args, **kwargs):
        p = real_plan(*args, **kwargs)
        p["executable"], p["venv"] = "/tmp/autograder-test-no-such-python/bin/python", None
        return p

    monkeypatch.setattr(newroot, "plan", plan_with_python_under_tmp)
    with ZygoteHandle(STEM, device="cpu", limits=Limits(), hide=secret_paths(ROOT), conceal=[ROOT]) as z:
        z.start({})
        assert "no root of its own (Python would not start in it" in z.warning, z.warning
        assert "its secrets stay covered" in z.warning
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no root of its own" in err, err


def test_concurrent_runs_take_uid_blocks_of_their_own_and_give_them_back():
    """Two runs on one machine (two shards on a node) never share a child's uid: each holds a
    block of UID_SLOTS while it runs, and the block is free again when it ends."""
    from autograder.sandbox.handle import UID_SLOTS, reserve_uid_block

    base = 1_900_000_000 + 37 * UID_SLOTS * 64  # a base no real run uses, so a run beside this test does not matter
    first, lease1 = reserve_uid_block(base)
    second, lease2 = reserve_uid_block(base)
    assert lease1 is not None and lease2 is not None
    assert first == base and second == base + UID_SLOTS
    lease1.close()
    again, lease3 = reserve_uid_block(base)
    assert again == base  # the first block, given back
    for lease in (lease2, lease3):
        lease.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="children get uids of their own only under a root grader")
def test_two_zygotes_at_once_run_their_children_as_different_uids():
    import pickle
    import time

    from autograder.answer import decode
    from autograder.sandbox import Limits, ZygoteHandle, secret_paths
    from autograder.sandbox.channel import Channel
    from autograder.sandbox.limits import MAX_MESSAGE

    def uid_of_a_child(z) -> int:
        pid, pidfd, sock = z.spawn()
        conn = Channel(sock, limit=MAX_MESSAGE)
        try:
            assert decode(conn.receive(time.monotonic() + 60))["kind"] == "ready"
            conn.queue(pickle.dumps(("cell", 0, "import os\nprint(os.getuid())")))
            reply = decode(conn.receive(time.monotonic() + 60))
            assert reply["ok"], reply
            return int(reply["stdout"].split()[-1])
        finally:
            conn.close()
            if pidfd is not None:
                os.close(pidfd)

    root = str(course_root())
    with ZygoteHandle(STEM, device="cpu", limits=Limits(), hide=secret_paths(root), conceal=[root]) as a, \
            ZygoteHandle(STEM, device="cpu", limits=Limits(), hide=secret_paths(root), conceal=[root]) as b:
        from autograder.grading import Grader

        cases = {name: p.cases for name, p in Grader(STEM, device="cpu").prepared.items()}
        a.start(cases)
        b.start(cases)
        ua, ub = uid_of_a_child(a), uid_of_a_child(b)
    assert ua != ub
    from autograder.sandbox.limits import UID_SLOTS

    assert abs(ua - ub) >= UID_SLOTS - 1  # different blocks, not neighbours in one
