"""The machinery every probe shares: call watching, running a case into an `Answer`."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from autograder.answer import Answer
from autograder.probes.watchnames import OpCall, op_name, watch_names, watched_objects

NOT_DIFFERENTIABLE = "not differentiable"


TAMPERED = "<the grader's call watch, switched off>"  # recorded as a forbidden call
COURSE_CODE = "the grader's own"  # how a guarded helper is recorded: f"{COURSE_CODE} {name}"
THREADED = "<a thread or process started by the graded code>"  # the watch holds in the calling thread only
ACTIVE: list = []  # the call watches entered now (innermost last)

# Frames of these modules are torch's (or the grader's) own implementation: a forbidden function they
# call on behalf of a permitted one is not the graded code's call (the torch function mode sees only
# the outermost torch call too). torch.nn's modules, torch.optim, ... are not among them: a module's
# forward calling F.l1_loss is the student's choice of module.
_INTERNAL = ("torch._", "torch.overrides", "torch.utils", "torch.fx", "torch.jit", "torch.functional",
             "torch.nn.functional", "torch.autograd", "torch.testing", "torch.masked", "torch.sparse",
             "autograder.")
# torch's private lookups of an operator by its name: graded code that calls them goes around the watch.
_PRIVATE_LOOKUPS = frozenset({"_get_operation_overload", "_jit_get_operation", "_get_schema",
                              "_dispatch_call_boxed", "_dispatch_find_schema_or_throw"})


class _GuardedDisable:
    """What graded code gets as torch._C.DisableTorchFunction or torch._C._DisableTorchDispatch in
    the child (`guard_the_watch`): the real guard, which, entered by code other than torch's own
    while a call watch is on, records TAMPERED in it."""

    real = None

    def __init__(self, *args, **kwargs):
        self._inner = type(self).real(*args, **kwargs)

    def __enter__(self):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith("torch."):  # torch's own code (fake tensors, ...) may; graded code may not
            for watch in ACTIVE:
                watch.record(TAMPERED)
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


def guard_the_watch() -> None:
    """In the child's zygote, before torch is snapshot: the switches that turn the watch off
    report themselves (the snapshot restores them before every request), and so do the ways
    off the watched thread (`_guard_starts`)."""
    for name in ("DisableTorchFunction", "_DisableTorchDispatch"):
        real = getattr(torch._C, name, None)
        if real is not None and not (isinstance(real, type) and issubclass(real, _GuardedDisable)):
            setattr(torch._C, name, type(name, (_GuardedDisable,), {"real": real}))
    _guard_starts()


def prepare_watch(names) -> None:
    """Work out once (in the zygote, before children fork) every name and object the watch of
    `names` looks for."""
    watched_objects(watch_names(tuple(names)))


# -- the ways off the watched thread ---------------------------------------------------------
# Torch's modes and a profile hook hold in the thread that entered them. While a watch is on, graded
# code that starts a thread or a process (or finds one running), or sets the profile hook, is recorded:
# THREADED or TAMPERED. `_STARTS` holds the wrapped starters, checked in place when a watch leaves.
_STARTS: list[tuple[Any, str, Any]] = []
_OWN_PROFILE = [False]  # True while the watch itself sets the profile hook
_STARTED = [False]  # a thread or process was started since a watch last left
_AUDITED_STARTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.exec", "os.spawn",
                             "os.system", "subprocess.Popen", "pty.spawn"})
_AUDITED_TAMPERING = frozenset({"sys.setprofile", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"})


def _record_all(what: str) -> None:
    for watch in ACTIVE:
        watch.record(what)


def _audit(event: str, args) -> None:
    if ACTIVE:
        if event in _AUDITED_STARTS:
            _record_all(THREADED)
        elif event in _AUDITED_TAMPERING and not _OWN_PROFILE[0]:
            _record_all(TAMPERED)


def _recording(real):
    def start(*args, **kwargs):
        if ACTIVE:
            _record_all(THREADED)
        _STARTED[0] = True
        return real(*args, **kwargs)

    start._watched_start = True
    return start


def _guard_starts() -> None:
    import _posixsubprocess
    import _thread
    import threading

    if _STARTS:
        return
    thread = _recording(_thread.start_new_thread)
    for module, attr in ((_thread, "start_new_thread"), (_thread, "start_new"), (threading, "_start_new_thread")):
        if hasattr(module, attr):
            setattr(module, attr, thread)
            _STARTS.append((module, attr, thread))
    fork_exec = _recording(_posixsubprocess.fork_exec)
    _posixsubprocess.fork_exec = fork_exec
    _STARTS.append((_posixsubprocess, "fork_exec", fork_exec))
    sys.addaudithook(_audit)


def _starter_put_back() -> str | None:
    """TAMPERED when a thread or process starter was put back (around the watch), else None."""
    if any(getattr(module, attr, None) is not start for module, attr, start in _STARTS):
        return TAMPERED
    return None


def _other_threads() -> dict[int, int] | None:
    """CPU time (ns) of every other Python thread of this process, None when there is none: a
    thread left running (a worker) is the graded code's way off the watch only if it runs while
    the graded code does; one that waits (a progress bar's monitor) costs nothing."""
    import _thread

    if not _thread._count():
        return None
    me = _thread.get_ident()
    others = [ident for ident in sys._current_frames() if ident != me and ident not in _EXCUSED]
    if not others:
        return None
    time.sleep(0.00005)  # let a thread that is finishing what the graded code gave it finish it now
    clocks = {}
    for ident in others:
        try:
            clocks[ident] = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except (OSError, AttributeError):
            clocks[ident] = -1
    return clocks


_EXCUSED: set[int] = set()  # threads not read: a Jupyter kernel's own (`excuse_running_threads`)


def excuse_running_threads() -> None:
    """In a Jupyter kernel (nbgrader's hidden cells), the threads running now are the kernel's
    (its I/O, heartbeat, control): their work is not the graded code's. Only the runner's child,
    which has no thread of its own, reads every other thread."""
    import _thread

    _EXCUSED.update(ident for ident in sys._current_frames() if ident != _thread.get_ident())


def _ran_meanwhile(before: dict[int, int] | None) -> bool:
    """Whether another Python thread ran since `_other_threads()` gave `before` (or started)."""
    after = _other_threads()
    if after is None:
        return bool(before)  # a thread there before has ended: it ran
    if before is None:
        return True
    return set(before) != set(after) or any(after[k] != before[k] or after[k] < 0 for k in after)


def _set_profile(fn) -> None:
    _OWN_PROFILE[0] = True
    try:
        sys.setprofile(fn)
    finally:
        _OWN_PROFILE[0] = False


def _internal(frame) -> bool:
    """Whether frame runs torch's (or the grader's) own code: its globals are those of a module
    with an `_INTERNAL` name (a cell cannot pass for one by naming itself so)."""
    if frame is None:
        return True
    g = frame.f_globals
    name = g.get("__name__")
    if not isinstance(name, str) or not name.startswith(_INTERNAL):
        return False
    module = sys.modules.get(name)
    return module is not None and getattr(module, "__dict__", None) is g


_HANDLERS: dict = {}  # type -> whether it has a __torch_function__ or __torch_dispatch__ of its own
_PLAIN = frozenset({torch.Tensor, torch.nn.Parameter, torch._C.TensorBase})  # torch's own: no handlers of their own
_FUNCTION = type(_internal)
_LABELS: dict = {}  # watch names -> {torch function or operator: its label, or None}; see _CallWatch.label_of


def _own_handlers(cls) -> bool:
    """Whether the Tensor subclass cls runs code of its own on torch calls (a handler defined
    outside torch): its handlers run with torch's modes off, so the profile hook must watch them."""
    own = _HANDLERS.get(cls)
    if own is None:
        own = False
        for attr in ("__torch_function__", "__torch_dispatch__"):
            owner = next((k for k in getattr(cls, "__mro__", ()) if attr in vars(k)), None)
            if owner is not None and not str(getattr(owner, "__module__", "")).startswith("torch"):
                own = True
        _HANDLERS[cls] = own
    return own


def _profile_hook(watch: "_CallWatch", previous):
    """A profile function that records calls of the watched names' code objects and builtins by
    graded code, wherever they happen in this thread: also inside a Tensor subclass's
    __torch_function__ or __torch_dispatch__, where torch's modes are off. Chains `previous`."""
    codes, builtins, names, record = watch.codes, watch.builtins, watch.names, watch.record
    guarded = watch.guarded
    tensor = torch._C.TensorBase
    if not callable(previous):  # e.g. cProfile's profiler, a C function: it is off while the watch is on
        previous = None

    def hook(frame, event, arg):
        if event == "c_call":
            hit = builtins.get(id(arg))
            if hit is not None:
                if hit[1] is arg and not _internal(frame):
                    record(hit[0])
            else:
                name = getattr(arg, "__name__", None)
                if name in names and isinstance(getattr(arg, "__self__", None), tensor) and not _internal(frame):
                    record(f"torch.{name}")
                elif (name in _PRIVATE_LOOKUPS and getattr(arg, "__module__", None) == "torch._C"
                      and not _internal(frame)):
                    record(TAMPERED)
        elif event == "call":
            label = codes.get(frame.f_code)
            if label is not None and frame.f_code in guarded:
                record(label)
            elif label is not None and not _internal(frame.f_back):
                if label is OpCall:
                    name = op_name(frame.f_locals.get("self"))
                    if name in names:
                        record(f"torch.ops.aten.{name}")
                else:
                    record(label)
        if previous is not None:
            previous(frame, event, arg)

    return hook


class _DispatchWatch(TorchDispatchMode):
    """The same watch one level down, at torch's dispatcher: it sees every aten operator that
    runs (after composite operators are decomposed), however it was reached: torch.ops.aten
    and its overloads, a `torch.special` alias, or code run with torch function handling off."""

    def __init__(self, watch: "_CallWatch"):
        super().__init__()
        self.watch = watch

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No dynamo wrapper around __torch_dispatch__ (torch adds one to every dispatch mode by
        default, about 1 µs an operator): nothing is compiled while a watch is on."""
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.watch.note(func, types)
        return func(*args) if kwargs is None else func(*args, **kwargs)


class _CallWatch(TorchFunctionMode):
    """Records calls of the torch functions `names` forbids, under every name they go by
    (`watchnames.watch_names`: aliases, `torch._C` builtins, aten operators and overloads), at
    three levels:

    - a torch function mode sees the torch function itself, whatever alias or module path the
      code used to reach it (F.l1_loss, torch._C._nn.l1_loss, nn.L1Loss()(...), a method,
      torch.ops.aten.l1_loss.default), so renaming does not hide a call;
    - a dispatch mode (`_DispatchWatch`) sees the aten operators below it, so switching torch
      function handling off does not either;
    - a profile hook (`_profile_hook`) sees the Python functions and builtins behind those names
      called by graded code where both modes are off: inside a Tensor subclass's own handlers
      (it is turned on when either mode first meets such a subclass, as only then is it needed),
      also when an answer's value is computed late (`run_probe` makes answers plain inside the watch).

    Code that pops either mode off its stack, sets the profile hook or puts back a thread starter
    is recorded as TAMPERED; a thread or process started (or running) while the watch is on, as
    THREADED. docs/sandbox.md says what the watch cannot see.
    """

    def __init__(self, names: tuple[str, ...], guarded: tuple = ()):
        super().__init__()
        self.names = watch_names(tuple(names))
        self.codes, self.builtins = watched_objects(self.names)
        self.labels = _LABELS.setdefault(self.names, {})  # func -> label or None, shared by the watches of names
        # the grader's own code for the graded function (a helper another check runs in place of the
        # student's): importable in the child, so graded code that runs it is recorded, whoever calls it
        self.guarded = {fn.__code__: f"{COURSE_CODE} {fn.__name__}" for fn in guarded}
        if self.guarded:
            self.codes = {**self.codes, **self.guarded}
        self.seen: list[str] = []
        self._below: list[_DispatchWatch] = []
        self._entries: list[list] = []  # per entry: [our profile hook once on, the profile it replaced]

    def record(self, what: str) -> None:
        if what not in self.seen:
            self.seen.append(what)

    def label_of(self, func) -> str | None:
        """What a call of `func` (a torch function, method or operator) is recorded as: None when
        it is not forbidden. Worked out once a function for each set of names (`labels`), except
        for a Python function of the graded code's own (its name may change between calls)."""
        if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            name = op_name(func)
            label = f"torch.ops.aten.{name}" if name in self.names else None
        else:
            name = getattr(func, "__name__", "")
            label = f"{getattr(func, '__module__', None) or 'torch'}.{name}" if name in self.names else None
            if type(func) is _FUNCTION and not str(getattr(func, "__module__", "")).startswith("torch"):
                return label
        try:
            self.labels[func] = label
        except TypeError:  # unhashable: worked out at every call
            pass
        return label

    def note(self, func, types) -> None:
        """What either level does for a call it sees: record it when forbidden, and turn the
        profile hook on when a Tensor subclass with handlers of its own takes part."""
        try:
            label = self.labels[func]
        except (KeyError, TypeError):
            label = self.label_of(func)
        if label is not None:
            self.record(label)
        for t in types:
            if t not in _PLAIN and _own_handlers(t):
                self.hook_on()
                break

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.note(func, types)
        return func(*args) if kwargs is None else func(*args, **kwargs)

    def hook_on(self) -> None:
        """Turn the profile hook on for the rest of this entry: a Tensor subclass with handlers of
        its own is about to run them, with torch's modes off."""
        entry = self._entries[-1] if self._entries else None
        if entry is not None and entry[0] is None:
            entry[0] = _profile_hook(self, sys.getprofile())
            _set_profile(entry[0])

    def __enter__(self):
        below = _DispatchWatch(self)
        below.__enter__()
        self._below.append(below)
        ACTIVE.append(self)
        off = _starter_put_back()
        if off:
            self.record(off)
        self._entries.append([None, sys.getprofile(), _other_threads()])
        entered = super().__enter__()
        if self.guarded:
            self.hook_on()
        return entered

    def __exit__(self, *exc):
        hook, previous, threads = self._entries.pop()
        if threads is not None or _STARTED[0]:
            _STARTED[0] = False
            if _ran_meanwhile(threads):
                self.record(THREADED)
        if sys.getprofile() is not (hook or previous):
            self.record(TAMPERED)
        if hook is not None or sys.getprofile() is not previous:
            _set_profile(previous)
        off = _starter_put_back()
        if off:
            self.record(off)
        if ACTIVE and ACTIVE[-1] is self:
            ACTIVE.pop()
        below = self._below.pop()
        n_fn, n_disp = torch._C._len_torch_function_stack(), torch._C._len_torch_dispatch_stack()
        intact = (n_fn > 0 and torch._C._get_function_stack_at(n_fn - 1) is self
                  and n_disp > 0 and torch._C._get_dispatch_stack_at(n_disp - 1) is below)
        if not intact:
            self.record(TAMPERED)
            while torch._C._len_torch_function_stack() > 0:  # put the stacks back as they were before
                top = torch._C._pop_torch_function_stack()
                if top is self:
                    break
            while torch._C._len_torch_dispatch_stack() > 0:
                top = torch._C._pop_torch_dispatch_stack()
                if top is below:
                    break
            return False
        super().__exit__(*exc)
        below.__exit__(*exc)
        return False


UPSTREAM = (0.5, 1.5)  # the range of the upstream gradient (tolerance.py's floor uses its maximum)


def grad_weights(out: torch.Tensor) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient, so that permuted or summed
    outputs give different input gradients."""
    n = out.numel()
    w = torch.linspace(*UPSTREAM, max(n, 1), dtype=out.dtype, device=out.device)
    return w[:n].reshape(out.shape)


def run_probe(check, impl, case) -> Answer:
    """Run one case of `check` on `impl` (the student's code, the reference or a known
    mistake) and return what came out as an `Answer` of plain values."""
    guarded = getattr(check.probe, "guarded", ())
    watch = _CallWatch(check.forbidden, guarded) if check.forbidden or guarded else None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            if getattr(case, "fake_cuda", False):
                from autograder.probes.fake_cuda import run_on_fake_cuda

                values = run_on_fake_cuda(check.probe, impl, case, watch)
            else:
                values = check.probe.run(impl, case, watch)
        error = None
    except BaseException as exc:  # noqa: BLE001 - the student's exception is a result
        if isinstance(exc, KeyboardInterrupt):
            raise
        values = {}
        error = describe_exception(exc)
    if watch is not None and any(isinstance(v, torch.Tensor) and type(v) is not torch.Tensor and not _is_fake(v)
                                 for v in values.values()):
        # A Tensor subclass's answer is made plain inside the watch: what its own handlers call
        # when its value is read (a late F.l1_loss) is the graded code's call.
        try:
            with watch:
                plain, devices = to_wire(values)
        except BaseException as exc:  # noqa: BLE001 - the answer's own code raised
            if isinstance(exc, KeyboardInterrupt):
                raise
            plain, devices, error = {}, {}, describe_exception(exc)
    else:
        plain, devices = to_wire(values)
    return Answer(plain, devices, error, list(watch.seen) if watch else [], buf.getvalue()[-2000:])


def _is_fake(t) -> bool:
    from autograder.probes.fake_cuda import is_fake

    return is_fake(t)


def describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    # The last frame in the student's code is the one they can act on.
    user = [f for f in frames if f.filename.startswith("<cell")]
    where = f" (cell {user[-1].filename[6:-1]}, line {user[-1].lineno})" if user else ""
    text = f"{type(exc).__name__}: {exc}"
    return (text[:1500] + " ...") if len(text) > 1500 else text + where


def to_wire(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(plain values, devices): plain tensors and plain values only; meta and fake
    (simulated CUDA) tensors become empty CPU tensors of the same shape and dtype, with
    their device recorded."""
    plain: dict[str, Any] = {}
    devices: dict[str, str] = {}
    for key, v in values.items():
        if isinstance(v, torch.Tensor):
            # a simulated device's tensor (or a subclass whose detach gives one) is not detached again
            t = v if type(v) is not torch.Tensor and _is_fake(v) else v.detach()
            if type(t) is not torch.Tensor and _is_fake(t):
                devices[key] = str(t.device)  # shape, dtype and device only
                plain[key] = torch.zeros(tuple(t.shape), dtype=t.dtype)
                continue
            if type(t) is not torch.Tensor:
                t = t.as_subclass(torch.Tensor)
            devices[key] = str(t.device)
            if t.device.type == "meta":
                t = torch.empty(t.shape, dtype=t.dtype)
            else:
                t = t.cpu().clone()
            plain[key] = t
        elif v is None or isinstance(v, (bool, int, float, str)):
            plain[key] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            plain[key] = list(v)
        else:
            plain[key] = f"<{type(v).__name__}>"
    return plain, devices
