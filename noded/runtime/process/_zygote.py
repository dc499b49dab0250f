"""The prewarm pool's fork server ("zygote"): ``python -u _zygote.py CHANNEL_FD [MODULE ...]``.

A worker's cold start is mostly its interpreter importing the runpod SDK (about
two seconds, over half of it py-cpuinfo probing the CPU in a subprocess).  The
zygote pays that once per noded: it imports what workers import, touches no GPU,
and forks each new worker from that warm image.  Who forks whom::

    noded ──socketpair──▶ zygote ─fork─▶ intermediate ─setsid, fork─▶ shim ─fork─▶ worker
         (worker dir + ready fd)        (exits at once)               (_shim.run)   (handler)

The shim is ``_shim.run`` itself in a fork of the zygote, with a ``spawn`` that
forks instead of executing: supervision, ``state.json``, the ready line, signal
forwarding, adoption and logs are the exec path's.  The worker child resets
what a fresh ``python [-uBsEO] handler.py`` would not have (process group, signals,
fds, cwd, environment, sys.argv/sys.path, random seeds, multiprocessing's
authkey) and runs the file as ``__main__`` the way the interpreter does
(sys.argv[0] as given, __main__ kept in sys.modules; runpy.run_path does
neither).

Nothing imported here may depend on a worker's environment:

* runpod's own modules read the worker's identity at import (RUNPOD_POD_ID,
  webhook URLs, API key; rp_http and rp_job copy them into globals), and one
  configures logging.  For ``runpod`` (``DEPS_ONLY``) a throwaway fork imports
  it and reports what it pulled in; the zygote imports that list minus runpod
  itself (and ``NEVER``).  Each worker imports runpod's own modules (~40 ms)
  under its own environment.
* py-cpuinfo runs a Python subprocess (~1.1 s) per get_cpu_info(), which runpod
  calls at import; the answer is a fact of the host, so the zygote asks once and
  workers parse a copy (a stale ``hz_actual`` is the price).
* Other listed modules (e.g. ``torch``) are imported whole; the zygote refuses
  to serve if that initialised CUDA.  CUDA_VISIBLE_DEVICES is set in the worker
  before any of its code runs.
* Some variables only count when a process or library starts (LD_*, PYTHON*,
  TLS trust stores, OpenMP/BLAS pools, ...; see ``fork_refusal``).  A worker that
  sets one, whose image shadows a preloaded module, or whose env says
  ``TIDE_PREWARM=0`` is exec'd from the forked child instead (same pid, same
  shim); shim.log says which path a worker took and why.

Workers share the zygote's hash seed (set PYTHONHASHSEED to get an exec).  The
zygote is stdlib-only, like the shim; it exits when noded closes its end of the
socketpair, and the workers it forked live on.
"""

from __future__ import annotations

import sys

_STARTUP = frozenset(sys.modules)  # what any interpreter has before a script's directory counts

import builtins  # noqa: E402 - after the startup snapshot on purpose
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402
from collections.abc import Iterable, Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

if __package__:
    from noded.runtime.process import _pyargv, _shim
else:  # run as a script: the shim and the argv planner sit beside this file
    import _pyargv  # type: ignore[import-not-found,no-redef]
    import _shim  # type: ignore[import-not-found,no-redef]

__all__ = ["DEPS_ONLY", "NEVER", "fork_refusal"]

DEPS_ONLY = ("runpod",)  # families preloaded for their dependencies only
NEVER = ("tqdm_loggable.auto",)  # picks its progress style from TQDM_*/CI variables at import
# Read only when a process or library starts: a worker that sets one is exec'd.
_START_ONLY = ("LD_", "MALLOC_", "GLIBC_TUNABLES", "OPENSSL_", "SSL_CERT_", "PYTHON")
_PYTHON_HANDLED = frozenset({"PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"})
_FAMILY_START_ONLY = {  # preloaded family -> what it reads once, at load
    "numpy": ("OMP_", "OPENBLAS_", "MKL_", "KMP_", "GOMP_"),
    "torch": ("OMP_", "MKL_", "KMP_", "GOMP_", "TORCH_", "PYTORCH_"),
    "huggingface_hub": ("HF_", "HUGGINGFACE_"),
    "transformers": ("HF_", "TRANSFORMERS_"),
    "diffusers": ("HF_", "DIFFUSERS_"),
}
_OFF = frozenset({"0", "false", "no", "off"})


def fork_refusal(
    argv: Sequence[str], env: Mapping[str, str], preloaded: Iterable[str], *, optimize: int = 0
) -> str:
    """Why this launch must be exec'd rather than forked from a zygote running at ``optimize``
    (its -O level); "" = fork.  Pure.  noded has checked the interpreter: argv[0] is taken as it."""
    plan = _pyargv.plan_python_launch(argv, argv[0] if argv else "")
    if isinstance(plan, _pyargv.Exec):
        return f"the command is not `python [-uBsEO] SCRIPT ...`: {plan.reason}"
    if plan.optimize != optimize:
        return f"the command runs at -O level {plan.optimize}, this zygote at {optimize}"
    if env.get("TIDE_PREWARM", "").lower() in _OFF:
        return "TIDE_PREWARM is off"
    loaded = set(preloaded)
    prefixes = _START_ONLY + tuple(p for f, ps in _FAMILY_START_ONLY.items() if f in loaded for p in ps)
    if "E" in plan.flags:  # -E: the interpreter ignores every PYTHON* variable
        prefixes = tuple(p for p in prefixes if p != "PYTHON")
    for key in sorted(env):
        if key not in _PYTHON_HANDLED and (key.startswith(prefixes) or key.endswith("_NO_EXTENSIONS")):
            return f"{key} is set (read only when a process starts)"
    ctype = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    if ctype not in ("C", "POSIX") and not ctype.lower().replace("-", "").endswith("utf8"):
        return f"the locale {ctype} is not UTF-8 (the zygote's stdio is)"
    return ""


def _shadowing(dirs: Sequence[str], preloaded: set[str]) -> str:
    """A module file in the worker's first sys.path entries that a preloaded module would hide."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            stem = e.name.split(".", 1)[0]
            module_like = e.is_dir() or e.name.endswith((".py", ".pyc", ".so"))
            if module_like and stem in preloaded:
                return f"{e.path} shadows the preloaded module {stem}"
    return ""


def _family(name: str, family: str) -> bool:
    return name == family or name.startswith(family + ".")


# -- preloading (once, at start) ------------------------------------------------------------


def _memoize_cpuinfo() -> None:
    if importlib.util.find_spec("cpuinfo") is None:
        return
    probe = importlib.import_module("cpuinfo.cpuinfo")
    answer = probe.get_cpu_info_json()  # get_cpu_info() parses a fresh dict from this each call

    def get_cpu_info_json() -> str:
        return str(answer)

    setattr(probe, "get_cpu_info_json", get_cpu_info_json)  # noqa: B010 - a module, patched on purpose
    setattr(sys.modules["cpuinfo"], "get_cpu_info_json", get_cpu_info_json)  # noqa: B010


def _dependencies_of(family: str) -> list[str]:
    """What importing ``family`` imports, in order, without importing it here (a throwaway fork does)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            before = set(sys.modules)
            importlib.import_module(family)
            new = [n for n in sys.modules if n not in before and not _family(n, family) and n not in NEVER]
            with os.fdopen(w, "wb") as out:
                out.write(json.dumps(new).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise ImportError(f"importing {family} failed (traceback above)")
    return list(json.loads(data))


def _import_all(names: Iterable[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # an alias or a lazy submodule: its parent brought what counts
            continue


def preload(modules: Sequence[str]) -> dict[str, Any]:
    """Import ``modules`` (only the dependencies of a DEPS_ONLY family); a report for noded's log."""
    t0 = time.monotonic()
    loaded: list[str] = []
    failed: dict[str, str] = {}
    if modules:
        _memoize_cpuinfo()
    for name in modules:
        try:
            if name in DEPS_ONLY:
                _import_all(_dependencies_of(name))
            else:
                importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise SystemExit("tide zygote: importing the prewarm modules initialised CUDA; not serving")
    return {
        "loaded": loaded,
        "failed": failed,
        "import_s": round(time.monotonic() - t0, 3),
        "threads": len(os.listdir("/proc/self/task")),
    }


# -- serving ---------------------------------------------------------------------------------


class _BecomeWorker(BaseException):  # control flow, not an error
    """Raised in a forked worker child: it unwinds the zygote's and the shim's frames so the
    handler runs at the bottom of the stack, as in a fresh interpreter."""

    def __init__(self, launch: dict[str, Any]) -> None:
        super().__init__()
        self.launch = launch


class _Forked:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class Zygote:
    def __init__(self, channel: socket.socket, preloaded: set[str]) -> None:
        self._channel = channel
        self._preloaded = preloaded

    def serve(self) -> None:
        """Until noded closes its end: one request = a worker dir and the fd for its ready line."""
        while True:
            msg, fds, _, _ = socket.recv_fds(self._channel, 65536, 1)
            if not msg:
                return
            if len(fds) != 1:
                print(f"tide zygote: malformed request {msg[:200]!r}", file=sys.stderr, flush=True)
                for fd in fds:
                    os.close(fd)
                continue
            self._fork_shim(os.fsdecode(msg), fds[0])

    def _fork_shim(self, worker_dir: str, ready_fd: int) -> None:
        pid = os.fork()
        if pid != 0:
            os.close(ready_fd)
            os.waitpid(pid, 0)  # the intermediate exits at once; the shim is nobody's child
            return
        try:
            self._channel.close()
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            code = self._run_shim(worker_dir, ready_fd)
        except _BecomeWorker:
            raise
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(code)

    def _run_shim(self, worker_dir: str, ready_fd: int) -> int:
        fd = os.open(os.path.join(worker_dir, "shim.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

        def spawn(launch: dict[str, Any]) -> _Forked:
            child = os.fork()
            if child == 0:
                self._become_worker(worker_dir, launch, ready_fd)
            with contextlib.suppress(OSError):
                os.setpgid(child, child)  # also done by the child: whoever runs first
            return _Forked(child)

        return int(_shim.run(worker_dir, ready_fd, spawn))

    def _become_worker(self, worker_dir: str, launch: dict[str, Any], ready_fd: int) -> None:
        """In the forked child: set it up like the exec path, then fork-run or exec.  Never returns."""
        try:
            reason = self._prepare(launch, ready_fd)
            with open(os.path.join(worker_dir, "shim.log"), "a") as note:
                note.write(f"prewarm: exec ({reason})\n" if reason else "prewarm: forked from the zygote\n")
            if reason:
                argv, env = launch["argv"], launch["env"]
                os.execvpe(argv[0], argv, env)
        except BaseException:
            traceback.print_exc()
            os._exit(127)
        raise _BecomeWorker(launch)

    def _prepare(self, launch: dict[str, Any], ready_fd: int) -> str:
        os.setpgid(0, 0)
        os.close(ready_fd)
        if launch.get("cgroup_dir"):
            with open(os.path.join(launch["cgroup_dir"], "cgroup.procs"), "w") as f:
                f.write("0")
        fd = os.open(launch["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.chdir(launch["cwd"])
        os.environ.clear()  # putenv/unsetenv: C code (CUDA included) sees the worker's env
        os.environ.update(launch["env"])
        argv, env = launch["argv"], launch["env"]
        reason = fork_refusal(argv, env, self._preloaded, optimize=sys.flags.optimize)
        if reason:
            return reason
        plan = _fork_plan(argv)
        if not os.path.isfile(plan.script):
            return f"no script {plan.script!r} (the interpreter reports it)"
        user_site = "" if "s" in plan.flags else _user_site()
        return user_site or _shadowing(_worker_path_head(plan, env), self._preloaded)


def _fork_plan(argv: Sequence[str]) -> _pyargv.Fork:
    plan = _pyargv.plan_python_launch(argv, argv[0])
    assert isinstance(plan, _pyargv.Fork)  # fork_refusal said so
    return plan


def _python_env(plan: _pyargv.Fork, env: Mapping[str, str], name: str) -> str:
    """A PYTHON* variable as the interpreter sees it: none under -E."""
    return "" if "E" in plan.flags else env.get(name, "")


def _user_site() -> str:
    """A fresh interpreter would put ~/.local/lib/pythonX.Y/site-packages on sys.path if it exists."""
    import site

    site.USER_BASE = site.USER_SITE = None  # recomputed from this env's HOME
    path = site.getusersitepackages()
    return f"{path} exists (a user site-packages)" if site.ENABLE_USER_SITE and os.path.isdir(path) else ""


def _worker_path_head(plan: _pyargv.Fork, env: Mapping[str, str]) -> list[str]:
    """What a fresh interpreter puts before the standard library: the script's dir, PYTHONPATH."""
    extra = [os.path.abspath(p) for p in _python_env(plan, env, "PYTHONPATH").split(os.pathsep) if p]
    return [os.path.dirname(os.path.abspath(plan.script)), *extra]


def _reopen_stdio(unbuffered: bool) -> None:
    """The zygote runs with -u; a worker without it gets the buffered stdio a fresh interpreter
    gives a file (stdout block-buffered, stderr line-buffered), else keeps the unbuffered one."""
    if unbuffered:
        return
    enc, errors = sys.stdout.encoding, sys.stdout.errors
    out = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), enc, errors)
    err = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), enc, "backslashreplace", line_buffering=True
    )
    sys.stdout = sys.__stdout__ = out  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = err  # type: ignore[misc]


def run_worker(launch: dict[str, Any]) -> int:
    """The handler as ``__main__``, at the bottom of the stack.  What the interpreter would do
    for ``python [-uBsEO] SCRIPT ARGS``, given the environment the child already has."""
    argv = launch["argv"]
    plan = _fork_plan(argv)
    script = os.path.abspath(plan.script)
    sys.argv = [plan.script, *plan.args]
    sys.orig_argv = list(argv)  # /proc/<pid>/cmdline still reads the zygote's: ps shows `_zygote.py`
    sys.path[:0] = _worker_path_head(plan, os.environ)
    if "B" in plan.flags or _python_env(plan, os.environ, "PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True
    _reopen_stdio("u" in plan.flags or bool(_python_env(plan, os.environ, "PYTHONUNBUFFERED")))
    importlib.invalidate_caches()
    _reset_process_state()
    _run_sitecustomize(_python_env(plan, os.environ, "PYTHONPATH"))
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    sys.modules["__main__"] = main
    with io.open_code(script) as f:
        source = f.read()
    try:
        exec(compile(source, script, "exec", dont_inherit=True, optimize=plan.optimize), main.__dict__)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        exc.with_traceback(tb.tb_next if tb is not None else None)  # start at the handler's own frame
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def _run_sitecustomize(pythonpath: str) -> None:
    """A fresh interpreter imports ``sitecustomize`` from its PYTHONPATH at start (site.py); the
    zygote's own came from elsewhere or not at all.  Runs a worker's (e.g. Tide's injected fast
    worker hook) as site.py would: its errors are printed, not fatal."""
    dirs = [os.path.abspath(p) for p in pythonpath.split(os.pathsep) if p]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", dirs) if dirs else None
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        traceback.print_exc()


def _reset_process_state() -> None:
    """Per-process state a fork would share with its siblings, made fresh as in a new process."""
    import locale
    import tempfile

    time.tzset()
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")  # what the interpreter does at start
    tempfile.tempdir = None  # recomputed from this env's TMPDIR
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None:  # Listener/Manager auth must not be shared across workers
        mp.current_process().authkey = os.urandom(32)
    nprandom = sys.modules.get("numpy.random")
    if nprandom is not None:  # seeded from entropy at import in the zygote: reseed per worker
        nprandom.seed()


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[1]))
    del sys.path[0]  # this file's directory: workers get their own script's
    report = preload(argv[2:])
    gc.freeze()  # keep the preloaded objects out of collections: fewer pages copied per worker
    preloaded = {n.split(".", 1)[0] for n in sys.modules} - {n.split(".", 1)[0] for n in _STARTUP}
    channel.send(b"ready " + json.dumps(report).encode())
    try:
        Zygote(channel, preloaded).serve()
    except _BecomeWorker as become:
        launch = become.launch
    else:
        return 0
    return run_worker(launch)  # outside the except block: no exception context for the handler


if __name__ == "__main__":
    sys.exit(main(sys.argv))
