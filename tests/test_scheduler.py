"""Grading a class beyond one machine, through a real scheduler.

A single-node Slurm cluster (munged, slurmctld and slurmd, started by a fixture in a scratch folder and
stopped by it in every case) runs deploy/slurm/grade-array.sbatch as an array of shards, then
deploy/slurm/grade-report.sbatch as the merge that depends on them: the merged grades.csv, results,
feedback and nbgrader gradebook must be those of one unsharded run of the same class. The Kubernetes
manifests in deploy/kubernetes/ cannot run here (no cluster): their Indexed Job fields are checked, and
their command lines are run for every index outside Kubernetes and merged the same way.

Run: `.venv/bin/python -m pytest tests/test_scheduler.py -rP` (-rP prints the measured times). Without
Slurm's binaries or root the cluster tests are skipped, saying how to install them (`make test` does).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder.course import source_notebook
from tests.nbgrader_course import gradebook_scores
from tests.test_instructor import FULL, STEM, STUDENTS, _export, _write, course_copy, make_class

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SHARDS = 3
CLASS = sorted(STUDENTS + ["source"])  # test_instructor's class, and the source notebook itself (full marks)
GRADE_ARGS = ["--device", "cpu", "--cell-timeout", "5"]  # the `hangs` student's cell is cut at 5 s
TIMEOUT = 900  # seconds: a bound on any one grading run, job or wait
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SLURM = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")
INSTALL = "apt-get install slurm-wlm (`make test` installs it when run as root)"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", TIMEOUT), **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _outputs(out: Path) -> dict[str, str]:
    """What a grading run leaves that must not depend on how the class was split: grades.csv,
    the LMS files, every student's results JSON and feedback."""
    files = [out / "grades.csv", out / "canvas_grades.csv", out / "moodle_grades.csv", out / "lms_report.csv",
             *(out / "results").rglob("*.json"),
             *(out / "feedback").rglob("*.txt"), *(out / "feedback").rglob("*.html")]
    return {str(p.relative_to(out)): p.read_text() for p in sorted(files)}


def _gradebook(course: Path) -> dict:
    """Each student's score per check cell in the course's gradebook, and `nbgrader export`'s total."""
    export = {s: (row["score"], row["max_score"]) for s, row in _export(course).items()}
    return {"cells": gradebook_scores(course, STEM), "export": export}


@pytest.fixture(scope="module")
def classroom(tmp_path_factory) -> Path:
    subs = tmp_path_factory.mktemp("class") / "submitted"
    make_class(subs)
    _write(subs, "source", json.loads(source_notebook(STEM).read_text()))
    assert sorted(p.name for p in subs.iterdir()) == CLASS
    return subs


@pytest.fixture(scope="module")
def single(classroom, tmp_path_factory) -> dict:
    """The class graded in one run, with the gradebook, as on one machine."""
    tmp = tmp_path_factory.mktemp("single")
    course, out = course_copy(tmp), tmp / "out"
    start = time.monotonic()
    _run([sys.executable, "-m", "autograder", "grade", STEM, "--submissions", str(classroom), "--out", str(out),
          *GRADE_ARGS, "--jobs", "2", "--gradebook", "auto", "--course", str(course)])
    return {"out": out, "course": course, "seconds": time.monotonic() - start}


# -- a single-node Slurm cluster --------------------------------------------------------------------

SLURM_CONF = """\
ClusterName=autograder-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
# no cgroups (a container may not delegate them): processes are tracked by parentage
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# listen on 127.0.0.1 only (the address `localhost` resolves to), not on every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=60 State=UP
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for(what: str, ready, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tails = {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*.log"))}
            raise AssertionError(f"{what} not ready within {timeout:.0f} s; logs: {tails}")
        time.sleep(0.5)


class SlurmCluster:
    """munged, slurmctld and slurmd of one node (`localhost`, 2 CPUs) on free ports, everything under `base`.

    Every process it starts, and every job's process, carries AUTOGRADER_TEST_SLURM=<base> in its
    environment: that is how stop() proves none is left."""

    def __init__(self, base: Path):
        self.base = base
        self.bin = {name: shutil.which(name, path=SBIN) for name in SLURM}
        self.env = {**os.environ, "SLURM_CONF": str(base / "slurm.conf"), "AUTOGRADER_TEST_SLURM": str(base)}
        self.daemons: dict[str, subprocess.Popen] = {}

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.base / "log" / f"{name}.out", "w")
        self.daemons[name] = subprocess.Popen([self.bin[name], *args], env=self.env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start(self) -> None:
        base = self.base
        for sub in ("munge", "state", "spool", "log"):
            (base / sub).mkdir(mode=0o700)
        key = base / "munge" / "munge.key"  # a key of its own: no other cluster can talk to this one
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        ctld_port, slurmd_port = _free_ports(2)
        (base / "slurm.conf").write_text(SLURM_CONF.format(base=base, ctld_port=ctld_port, slurmd_port=slurmd_port))
        munge = base / "munge"
        self._daemon("munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
                     f"--pid-file={munge}/munged.pid", f"--log-file={base}/log/munged.log",
                     f"--seed-file={munge}/munged.seed")
        _wait_for("munged", lambda: (munge / "munge.socket").exists(), 30, base / "log")
        conf = str(base / "slurm.conf")
        self._daemon("slurmctld", "-D", "-f", conf)
        self._daemon("slurmd", "-D", "-f", conf, "-N", "localhost")

        def idle() -> bool:
            for name, proc in self.daemons.items():
                assert proc.poll() is None, f"{name} exited {proc.returncode}: {self.logs()}"
            state = subprocess.run([self.bin["sinfo"], "-h", "-N", "-o", "%T"], env=self.env, capture_output=True,
                                   text=True, timeout=30)
            return state.stdout.strip() == "idle"

        _wait_for("the Slurm node", idle, 90, base / "log")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((self.base / "log").iterdir()))

    def sbatch(self, script: Path, *options: str, env: dict[str, str]) -> str:
        """Submit `script` with `env` added to the cluster's environment (sbatch passes it on); the job id."""
        proc = _run([self.bin["sbatch"], "--parsable", f"--chdir={self.base}", *options, str(script)],
                    env={**self.env, **env})
        return proc.stdout.strip().split(";")[0]

    def states(self, job: str, field: str = "JobState") -> list[str]:
        """A field of each of the job's tasks (one for a plain job), e.g. ['COMPLETED', 'COMPLETED']."""
        proc = _run([self.bin["scontrol"], "-o", "show", "job", job], env=self.env, timeout=60)
        return re.findall(rf"\b{field}=(\S+)", proc.stdout)

    def marked(self) -> list[int]:
        """Processes that belong to this cluster: its daemons, job steps and jobs (by their environment)."""
        mark = f"AUTOGRADER_TEST_SLURM={self.base}".encode()
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if mark in (d / "environ").read_bytes().split(b"\0"):
                        pids.append(int(d.name))
                except OSError:  # gone, or a zombie
                    pass
        return pids

    def stop(self) -> list[str]:
        """Cancel every job, shut the daemons down and wait for them; kill whatever of the cluster is left
        after that, and return what had to be killed (nothing, when all went well)."""
        def quiet(*cmd: str, timeout: float = 30) -> None:
            try:
                subprocess.run(cmd, env=self.env, capture_output=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass

        if self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
            quiet(self.bin["scancel"], f"--user={pwd.getpwuid(os.geteuid()).pw_name}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                queue = subprocess.run([self.bin["squeue"], "-h", "-o", "%i"], env=self.env, capture_output=True,
                                       text=True, timeout=30)
                if queue.returncode or not queue.stdout.strip():
                    break
                time.sleep(0.5)
            quiet(self.bin["scontrol"], "shutdown")
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.get(name)
            if proc is None:
                continue
            if name == "munged" and proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        left = []
        for pid in self.marked():
            try:
                left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
                os.kill(pid, 9)
            except OSError:
                pass
        return left


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the Slurm cluster test runs on Linux")
    missing = [name for name in SLURM if not shutil.which(name, path=SBIN)]
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}): {INSTALL}")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs: run the Slurm test as root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
    assert not left, f"processes of the test cluster were still running after its shutdown (killed): {left}"
    assert not cluster.marked()


def _job_env(classroom: Path, out: Path, course: Path) -> dict[str, str]:
    """The settings deploy/slurm/*.sbatch read: this course, the class, one output folder, the gradebook
    of a scratch copy of the course."""
    return {"STEM": STEM, "COURSE_DIR": str(REPO), "SUBMISSIONS": str(classroom), "OUT": str(out),
            "PYTHON": sys.executable, "GRADE_ARGS": " ".join(GRADE_ARGS), "GRADEBOOK": "auto",
            "NBGRADER_COURSE": str(course)}


@pytest.fixture(scope="module")
def sharded(slurm, classroom, tmp_path_factory) -> dict:
    """The class graded by a Slurm array of SHARDS tasks, then merged by the report job that depends on it,
    with the scripts in deploy/slurm as they are documented."""
    tmp = tmp_path_factory.mktemp("sharded")
    course, out, logs = course_copy(tmp), tmp / "out", tmp / "logs"
    logs.mkdir()
    env = _job_env(classroom, out, course)
    start = time.monotonic()
    # one CPU a task, so that the node's 2 CPUs run two shards at once and the third after them
    array = slurm.sbatch(DEPLOY / "slurm" / "grade-array.sbatch", f"--array=0-{SHARDS - 1}", "--cpus-per-task=1",
                         f"--output={logs}/grade-%A_%a.out", env=env)
    report = slurm.sbatch(DEPLOY / "slurm" / "grade-report.sbatch", f"--dependency=afterok:{array}", "--wait",
                          f"--output={logs}/report-%j.out", env=env)
    seconds = time.monotonic() - start
    return {"out": out, "course": course, "seconds": seconds, "array": slurm.states(array),
            "report": slurm.states(report), "run_times": [*slurm.states(array, "RunTime"),
                                                          *slurm.states(report, "RunTime")],
            "logs": {p.name: p.read_text() for p in sorted(logs.iterdir())}}


@pytest.mark.slow
@pytest.mark.scheduler
def test_a_slurm_array_grades_the_class_in_shards(sharded):
    assert sharded["array"] == ["COMPLETED"] * SHARDS, sharded["logs"]
    assert sharded["report"] == ["COMPLETED"], sharded["logs"]
    shards = [log for name, log in sharded["logs"].items() if name.startswith("grade-")]
    counts = [int(n) for log in shards for n in re.findall(r"\w+: (\d+) submissions? in [\d.]+ s", log)]
    assert counts == [len(CLASS) // SHARDS] * SHARDS, shards  # each task graded its own third of the class
    assert not [log for log in shards if "warning: grading sandbox" in log]  # namespaces work under slurmd


@pytest.mark.slow
@pytest.mark.scheduler
def test_the_merged_shards_equal_a_single_run(sharded, single):
    merged, one = _outputs(sharded["out"]), _outputs(single["out"])
    assert sorted(merged) == sorted(one) and len([k for k in one if k.startswith("results/")]) == len(CLASS)
    for name in one:
        assert merged[name] == one[name], name
    grades = (single["out"] / "grades.csv").read_text()
    assert f"source,{STEM},{FULL:g},{FULL:g},graded" in grades and f"untouched,{STEM},0,{FULL:g},graded" in grades
    print(f"{len(CLASS)} submissions of {STEM}: one run {single['seconds']:.1f} s; "
          f"a Slurm array of {SHARDS} shards on 2 CPUs and its merge {sharded['seconds']:.1f} s "
          f"(run time of each shard, then the merge: {', '.join(sharded['run_times'])})")


@pytest.mark.slow
@pytest.mark.scheduler
def test_the_merge_writes_the_same_gradebook_as_a_single_run(sharded, single):
    merged, one = _gradebook(sharded["course"]), _gradebook(single["course"])
    assert sorted(one["cells"]) == CLASS and merged == one
    for student in CLASS:
        assert (sharded["course"] / "autograded" / student / STEM / f"{STEM}.ipynb").is_file(), student


@pytest.mark.slow
@pytest.mark.scheduler
def test_a_failed_shard_cancels_the_merge(slurm, tmp_path):
    """The report job never runs over a partial class: afterok on a failed array cancels it (and
    `sbatch --wait` returns 0 for it, which is why the job's state is what tells)."""
    env = _job_env(tmp_path / "no-such-folder", tmp_path / "out", tmp_path)
    array = slurm.sbatch(DEPLOY / "slurm" / "grade-array.sbatch", "--array=0-1", "--cpus-per-task=1",
                         f"--output={tmp_path}/grade-%A_%a.out", env=env)
    report = slurm.sbatch(DEPLOY / "slurm" / "grade-report.sbatch", f"--dependency=afterok:{array}", "--wait",
                          f"--output={tmp_path}/report-%j.out", env=env)
    assert slurm.states(array) == ["FAILED", "FAILED"]
    assert slurm.states(report) == ["CANCELLED"]
    assert not (tmp_path / "out" / "grades.csv").exists()
    assert "no-such-folder" in (tmp_path / f"grade-{array}_0.out").read_text()


def _script(name: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a deploy/slurm script as Slurm would, with `echo` for Python: the command line it would run."""
    env = {"PATH": os.environ["PATH"], "STEM": STEM, "COURSE_DIR": str(tmp), "PYTHON": "echo", **env}
    return subprocess.run(["bash", str(DEPLOY / "slurm" / name)], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("array, task, env, shard", [
    ("0-15", 5, {}, "5/16"),
    ("0-15%4", 0, {}, "0/16"),
    ("3,7", 7, {"SHARDS": "16"}, "7/16"),  # a rerun of two shards of 16
])
def test_each_array_task_grades_its_shard(tmp_path, array, task, env, shard):
    first, last = (int(x) for x in re.split(r"[-,]", array.split("%")[0]))
    count = 2 if "," in array else last - first + 1
    proc = _script("grade-array.sbatch", tmp_path, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(first),
                   SLURM_ARRAY_TASK_MAX=str(last), SLURM_ARRAY_TASK_COUNT=str(count), SLURM_CPUS_PER_TASK="2",
                   **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-m", "autograder", "grade", STEM, "--submissions", "submitted", "--out",
                                   "grading", "--shard", shard, "--jobs", "2"]


def test_a_partial_array_without_the_number_of_shards_is_refused(tmp_path):
    proc = _script("grade-array.sbatch", tmp_path, SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_MIN="3",
                   SLURM_ARRAY_TASK_MAX="7", SLURM_ARRAY_TASK_COUNT="2")
    assert proc.returncode == 2 and "set SHARDS" in proc.stderr and not proc.stdout  # not shard 7/8
    proc = _script("grade-array.sbatch", tmp_path)
    assert proc.returncode != 0 and "submit this script as an array" in proc.stderr


def test_the_merge_job_writes_the_gradebook_only_when_asked(tmp_path):
    assert _script("grade-report.sbatch", tmp_path).stdout.split() == [
        "-m", "autograder", "report", "--out", "grading", "--stem", STEM]
    assert _script("grade-report.sbatch", tmp_path, GRADEBOOK="auto", NBGRADER_COURSE="/course").stdout.split() == [
        "-m", "autograder", "report", "--out", "grading", "--stem", STEM, "--gradebook", "auto",
        "--submissions", "submitted", "--course", "/course"]


# -- Kubernetes: the manifests' fields, and their command lines run outside Kubernetes ---------------

def _manifest(name: str) -> dict:
    import yaml

    return yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _env(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(job)["env"]}


def test_the_kubernetes_manifests_are_an_indexed_job_and_its_merge():
    grade, report = _manifest("grade-job.yaml"), _manifest("report-job.yaml")
    for job in (grade, report):
        assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] in ("Never", "OnFailure")  # a Job's pods may not restart Always
        container = _container(job)
        assert container["image"] and container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
        volumes = {v["name"] for v in pod["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
        assert container["workingDir"] in {m["mountPath"] for m in container["volumeMounts"]}
    spec = grade["spec"]
    assert spec["completionMode"] == "Indexed"
    assert int(_env(grade)["SHARDS"]) == spec["completions"] >= spec.get("parallelism", 1) >= 1
    assert '--shard "$JOB_COMPLETION_INDEX/$SHARDS"' in _container(grade)["args"][0]
    assert report["spec"].get("completionMode", "NonIndexed") == "NonIndexed" and report["spec"]["completions"] == 1
    assert " report " in _container(report)["args"][0] and "--gradebook" in _container(report)["args"][0]
    assert _env(report)["OUT"] == _env(grade)["OUT"] and _env(report)["STEM"] == _env(grade)["STEM"]


@pytest.mark.slow
def test_the_kubernetes_commands_merge_to_a_single_run(single, classroom, tmp_path):
    """Each pod's command line, run here at once for every completion index in a folder laid out like
    the pods' volume (the course checkout with its .venv, submitted/), then the report Job's."""
    grade, report = _manifest("grade-job.yaml"), _manifest("report-job.yaml")
    course = course_copy(tmp_path)
    (course / ".venv").symlink_to(sys.prefix)
    shutil.copytree(classroom, course / _env(grade)["SUBMISSIONS"])
    env = {**os.environ, "AUTOGRADER_COURSE_ROOT": str(course), **_env(grade), "SHARDS": str(SHARDS),
           "GRADE_ARGS": " ".join(GRADE_ARGS)}
    start = time.monotonic()
    pods = [subprocess.Popen([*_container(grade)["command"], *_container(grade)["args"]], cwd=course,
                             env={**env, "JOB_COMPLETION_INDEX": str(index)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for index in range(SHARDS)]
    for pod in pods:  # all at once, as the Job's pods run
        log = pod.communicate(timeout=TIMEOUT)[0]
        assert pod.returncode == 0, log[-3000:]
    _run([*_container(report)["command"], *_container(report)["args"]], cwd=course, env={**env, **_env(report)})
    seconds = time.monotonic() - start
    out = course / _env(grade)["OUT"]
    assert _outputs(out) == _outputs(single["out"])
    assert _gradebook(course) == _gradebook(single["course"])
    print(f"{SHARDS} pods' commands at once, and the merge: {seconds:.1f} s")
