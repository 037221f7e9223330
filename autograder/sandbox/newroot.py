"""A root of the zygote's own, in which the course does not exist.

Runs in the zygote's first process (`bootstrap.py`), before Python imports
anything of this package or torch, and ends by exec'ing the zygote's real
Python from the new root. Standard library only: the grader reads this file
and hands its text to `python -c`, so no import of `autograder` happens here.

What the new root holds (built on a tmpfs, then `pivot_root`):

* every top-level entry of the host's `/` bound as it is (`/usr`, `/etc`, ...),
  except the concealed paths (the course, the code's checkout, the run's
  output, the submissions, the gradebook, `--hide`); a folder on the way to a
  concealed path is rebuilt, with its other entries bound, so that the
  concealed path is simply absent: not covered, not listed, not in
  `/proc/self/mountinfo`;
* `/proc` (a new instance), `/sys` and `/dev` as the host has them, an empty `/tmp`
  but for what Python needs there (its prefixes, `sys.path`, `PYTHONPATH`: a
  virtual environment of another checkout, a CI runner's tool venv), bound at
  the same path; a folder of Python's that holds a concealed path is rebuilt
  without it, as above;
* this package, copied to `/grader/autograder` (its `__pycache__` too), so
  that `autograder.__file__` and every traceback name `/grader`;
* when Python's virtual environment lies inside a concealed path (the
  course's `.venv`): a virtual environment at `/venv` whose `site-packages`
  is an overlay of the real one. A bind mount would name its source folder in
  `/proc/self/mountinfo`; the overlay names only `/proc/self/fd/N`. Files of
  `site-packages` that name a concealed path (an editable install's finder
  and `.pth`, `direct_url.json`) are covered by an empty file.

Before it pivots, `enter` starts the interpreter once in the new root (a
chrooted child): if Python could not start there, the root is given up and
the zygote falls back as documented (covering the secrets, one warning line
naming why), instead of a zygote that dies without a word.

`plan(...)` runs in the grader; `enter(plan)` in the zygote's first process.
"""
from __future__ import annotations

import ctypes
import os
import stat
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
_CLONE_NEWNS, _MNT_DETACH = 0x00020000, 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(os.uname().machine)
_SPECIAL = ("proc", "sys", "dev", "tmp")  # made, not bound
_SMALL = 1 << 20  # site-packages files read for concealed paths: the small ones only

PACKAGE_HOME = "/grader"  # the package lives at /grader/autograder in the new root
VENV = "/venv"


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def plan(conceal, hide, package_dir: str, mountpoint: str) -> dict:
    """What `enter` builds, computed in the grader: the concealed paths (real paths), this
    package's folder, Python's layout, and an empty folder to build the new root on;
    `hide`, what the zygote covers instead if the new root cannot be built."""
    hidden = sorted({os.path.realpath(p) for p in conceal if p and os.path.exists(p)})
    prefix = os.path.realpath(sys.prefix)
    venv = None
    if prefix != os.path.realpath(sys.base_prefix) and _under(prefix, hidden):
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        sites = [p for p in sys.path if os.path.realpath(p) == os.path.join(prefix, "lib", ver, "site-packages")]
        base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
        system = "false"
        try:
            with open(os.path.join(prefix, "pyvenv.cfg")) as f:
                for line in f:
                    key, _, value = line.partition("=")
                    if key.strip() == "include-system-site-packages":
                        system = value.strip()
        except OSError:
            pass
        venv = {"site": os.path.realpath(sites[0]) if sites else os.path.join(prefix, "lib", ver, "site-packages"),
                "lib": ver, "base": base, "system": system, "version": sys.version.split()[0]}
    sites = sorted({os.path.realpath(q) for q in sys.path if q.endswith("-packages") and os.path.isdir(q)})
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"hidden": hidden, "hide": list(hide), "sites": sites, "needed": python_layout(pythonpath), "package": os.path.realpath(package_dir), "mountpoint": mountpoint,
            "executable": sys.executable, "venv": venv,  # unresolved: a venv is found next to its link
            "pythonpath": pythonpath}


def python_layout(pythonpath) -> list[str]:
    """Every path Python reads its interpreter, standard library and modules from: its
    prefixes, the executable (as named and resolved), `sys.path`, `PYTHONPATH`; each as
    named (a symlink on the way is made again) and resolved."""
    named = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, sys.executable,
             os.path.dirname(sys.executable), getattr(sys, "_base_executable", None) or sys.executable,
             *[q for q in sys.path if q], *pythonpath}
    out = set()
    for q in named:
        if q and os.path.isabs(q) and os.path.lexists(q):
            out.add(os.path.normpath(q))
            out.add(os.path.realpath(q))
    return sorted(out)


class _Libc:
    def __init__(self):
        self.c = ctypes.CDLL(None, use_errno=True)
        self.c.syscall.restype = ctypes.c_long

    def check(self, ret, what):
        if ret != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")

    def mount(self, source, target, fstype, flags, data=None):
        enc = (lambda s: s.encode() if s is not None else None)
        self.check(self.c.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
                   f"mount {target}")

    def umount(self, target):
        self.check(self.c.umount2(target.encode(), ctypes.c_int(_MNT_DETACH)), f"umount {target}")

    def pivot_root(self):
        if _SYS_PIVOT_ROOT is None:
            raise OSError(f"pivot_root: unknown on {os.uname().machine}")
        self.check(self.c.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), b".", b"."), "pivot_root")

    def unshare(self, flags):
        self.check(self.c.unshare(ctypes.c_int(flags)), "unshare")


def _read_package(folder: str) -> list[tuple[str, bytes, int, int]]:
    """(relative path, bytes, mode, mtime_ns) of every regular file of the package."""
    out = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    out.append((os.path.relpath(path, folder), f.read(), st.st_mode & 0o755, st.st_mtime_ns))
    return out


def _naming(site: str, hidden) -> list[str]:
    """The small files of site-packages (top level, *.dist-info, *.egg-info, *.egg-link) that
    name a concealed path, relative to site-packages."""
    needles = [h.encode() for h in hidden]
    found = []
    for top in [site] + [os.path.join(site, d) for d in sorted(os.listdir(site))
                         if d.endswith((".dist-info", ".egg-info"))]:
        for name in sorted(os.listdir(top)):
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > _SMALL:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if any(n in data for n in needles):
                found.append(os.path.relpath(path, site))
    # a .pth that imports a covered module (an editable install's hook) goes with it, or
    # Python would print its failure at every start
    modules = [os.path.splitext(f)[0].encode() for f in found if f.endswith(".py") and "/" not in f]
    for name in sorted(os.listdir(site)):
        path = os.path.join(site, name)
        if name.endswith(".pth") and name not in found and os.path.isfile(path):
            with open(path, "rb") as f:
                if any(m in f.read(_SMALL) for m in modules):
                    found.append(name)
    return found


def _bind_entry(lib: _Libc, src: str, dst: str) -> None:
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
        lib.mount(src, dst, None, _MS_BIND | _MS_REC)
    elif stat.S_ISREG(st.st_mode):
        open(dst, "w").close()
        lib.mount(src, dst, None, _MS_BIND | _MS_REC)


def _replicate(lib: _Libc, host: str, new: str, hidden, top: bool) -> None:
    """Rebuild `host` at `new`: entries bound, concealed ones left out, the folders on the way
    to a concealed path rebuilt (same mode and owner) and walked in turn."""
    for name in sorted(os.listdir(host)):
        src, dst = os.path.join(host, name), os.path.join(new, name)
        if top and name in _SPECIAL:
            continue
        if _under(src, hidden):
            continue
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode) and any(h.startswith(src.rstrip("/") + "/") for h in hidden):
            os.mkdir(dst)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            try:
                os.chown(dst, st.st_uid, st.st_gid)
            except OSError:
                pass  # in a user namespace the host's owners are not all mapped
            _replicate(lib, src, dst, hidden, False)
            continue
        try:
            _bind_entry(lib, src, dst)
        except OSError:
            pass  # a socket, a device, or what this user may not bind: not needed to grade


def _copy_mode(src: str, dst: str) -> None:
    st = os.lstat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except OSError:
        pass  # in a user namespace the host's owners are not all mapped


def _provide(lib: _Libc, root: str, path: str, hidden) -> None:
    """`path` of the host at the same place in the new root (whose parent folders, made here,
    are empty): the folders on the way made as the host has them (a symlink on the way made
    again, its target provided on its own), then `path` bound (or rebuilt without what is
    concealed in it)."""
    cur, new = "", root
    for name in path.strip("/").split("/"):
        cur, new = cur + "/" + name, os.path.join(new, name)
        if os.path.lexists(new):
            if os.path.islink(new) or not os.path.isdir(new) or os.path.ismount(new):
                return  # provided already (bound, or made again as a symlink)
            continue
        st = os.lstat(cur)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(cur), new)
            return
        if cur == path:
            if stat.S_ISDIR(st.st_mode) and any(_under(h, [cur]) for h in hidden):
                os.mkdir(new)
                _copy_mode(cur, new)
                _replicate(lib, cur, new, hidden, False)
            else:
                _bind_entry(lib, cur, new)
            return
        os.mkdir(new)
        _copy_mode(cur, new)


def _starts(root: str, exe: str, env: dict) -> str | None:
    """None when Python starts in the new root (a child chrooted into it runs `exe -c
    'import site'`), else why not, in one line."""
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            os.dup2(err_w, 2)
            os.chroot(root)
            os.chdir("/")
            os.execve(exe, [exe, "-c", "import site"], env)
        except BaseException as exc:  # noqa: BLE001 - reported by the exit code and stderr
            os.write(2, f"{exe}: {exc}".encode())
        os._exit(127)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as f:
        said = f.read(1 << 16).decode(errors="replace")
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0:
        return None
    last = [line.strip() for line in said.splitlines() if line.strip()]
    return f"Python would not start in it ({last[-1][:300] if last else f'exit code {code}'})"


def _build(lib: _Libc, p: dict) -> tuple[str, dict]:
    hidden, root = p["hidden"], p["mountpoint"]
    hidden = hidden + [os.path.realpath(root)]
    package = _read_package(p["package"])
    venv = p["venv"]
    if venv and (_under(os.path.dirname(venv["base"]), hidden) or not os.path.isdir(venv["site"])):
        raise OSError("Python itself lies inside the course")
    if not venv and (_under(p["executable"], hidden) or _under(os.path.realpath(p["executable"]), hidden)):
        raise OSError("Python itself lies inside the course")
    # files naming a concealed path, in every site-packages Python reads (a venv's, and any
    # other one: an editable install of this package records where its checkout lives)
    covered = {site: _naming(site, hidden) for site in p["sites"] if os.path.isdir(site)}
    site_fd = os.open(venv["site"], os.O_RDONLY | os.O_DIRECTORY) if venv else None

    lib.mount("none", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=256m")
    _replicate(lib, "/", root, hidden, True)
    for name, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777)):
        os.mkdir(os.path.join(root, name))
        os.chmod(os.path.join(root, name), mode)
    try:
        lib.mount("proc", os.path.join(root, "proc"), "proc", _MS_NOSUID | _MS_NODEV)
    except OSError:
        lib.mount("/proc", os.path.join(root, "proc"), None, _MS_BIND | _MS_REC)
    for name in ("sys", "dev"):
        lib.mount("/" + name, os.path.join(root, name), None, _MS_BIND | _MS_REC)
    # what Python needs under the emptied /tmp (the other top-level entries are bound whole)
    for path in sorted(q for q in p["needed"] if _under(q, ["/tmp"]) and q != "/tmp" and not _under(q, hidden)):
        _provide(lib, root, path, hidden)
    if "/tmp" in p["needed"]:
        _replicate(lib, "/tmp", os.path.join(root, "tmp"), hidden, False)

    home = root + PACKAGE_HOME
    for rel, data, mode, mtime in package:
        path = os.path.join(home, "autograder", rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode | 0o444)
        os.utime(path, ns=(mtime, mtime))  # the bytecode in __pycache__ stays valid
    for top, dirs, _ in os.walk(home):
        for d in dirs:
            os.chmod(os.path.join(top, d), 0o755)
    os.chmod(home, 0o755)

    exe = p["executable"]
    if venv:
        v = root + VENV
        site = os.path.join(v, "lib", venv["lib"], "site-packages")
        os.makedirs(site)
        os.makedirs(os.path.join(v, "bin"))
        os.symlink("lib", os.path.join(v, "lib64"))
        for name in ("python", "python3", venv["lib"]):
            os.symlink(venv["base"], os.path.join(v, "bin", name))
        with open(os.path.join(v, "pyvenv.cfg"), "w") as f:
            f.write(f"home = {os.path.dirname(venv['base'])}\n"
                    f"include-system-site-packages = {venv['system']}\nversion = {venv['version']}\n")
        empty = os.path.join(root, ".empty")
        os.mkdir(empty)
        empty_fd = os.open(empty, os.O_RDONLY | os.O_DIRECTORY)
        lib.mount("overlay", site, "overlay", _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
                  f"lowerdir=/proc/self/fd/{site_fd}:/proc/self/fd/{empty_fd}")
        os.close(empty_fd)
        os.close(site_fd)
        exe = VENV + "/bin/python"
    blank = os.path.join(root, ".blank")
    open(blank, "w").close()
    os.chmod(blank, 0)
    for host_site, names in covered.items():
        shown = (os.path.join(root + VENV, "lib", venv["lib"], "site-packages") if venv and host_site == venv["site"]
                 else None if _under(host_site, hidden) else root + host_site)
        for rel in names if shown and os.path.isdir(shown) else []:  # a site not in the root needs no cover
            lib.mount(blank, os.path.join(shown, rel), None, _MS_BIND)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_HOME] + [q for q in p["pythonpath"] if not _under(q, hidden)])
    for key in ("PATH", "LD_LIBRARY_PATH"):
        if key in env:
            kept = [q for q in env[key].split(os.pathsep) if q and not _under(os.path.realpath(q), hidden)]
            env[key] = os.pathsep.join(([VENV + "/bin"] if venv and key == "PATH" else []) + kept)
    why = _starts(root, exe, env)
    if why:
        raise OSError(why)
    os.chdir(root)
    lib.pivot_root()
    lib.umount(".")
    os.chdir("/")
    for path in (".blank", ".empty"):
        if os.path.lexists("/" + path):
            os.chmod("/" + path, 0)
    env["AUTOGRADER_NEWROOT"] = "ok"
    return exe, env


def enter(p: dict, argv: list[str], stage2: str) -> None:
    """Build the new root and exec `stage2` there (never returns); on failure, undo what can
    be undone and return, with AUTOGRADER_NEWROOT naming the reason (the zygote warns)."""
    lib = _Libc()
    try:
        lib.unshare(_CLONE_NEWNS)
        lib.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        exe, env = _build(lib, p)
    except OSError as exc:
        try:
            lib.umount(p["mountpoint"])
        except OSError:
            pass
        os.environ["AUTOGRADER_NEWROOT"] = f"no root of its own ({exc.strerror or exc})"
        return
    try:
        os.execve(exe, [exe, "-c", stage2, *argv], env)
    except OSError as exc:  # checked by _starts, so not expected: say it, the grader reports it
        os.write(2, f"autograder: the grading sandbox could not start Python in its root: {exe}: {exc}\n".encode())
        os._exit(127)

