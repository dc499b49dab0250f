"""The process runtime's prewarm pool (noded/runtime/process/_zygote.py), end to end.

A ``tide dev`` cluster in this process with ``prewarm=True``: unmodified RunPod handlers forked
from the zygote serve jobs through the real ``runpod`` SDK, each with its own environment, URLs
and token, and workers of different endpoints share no state.  Then the runtime on its own: the
cases the zygote must hand to a plain exec, a zygote that dies, a handler's exit paths,
multiprocessing inside a forked worker, and a supervised worker whose shim dies.

The runtime contract suite runs against the pool too (tests/contract/test_runtime.py,
variant ``process+prewarm``).  Tests never assert on timing: they wait (bounded) for states.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from noded.runtime import ProcessRuntime, WorkerSpec
from noded.runtime.process._pyargv import Fork, plan_python_launch
from noded.runtime.process._runtime import EXIT_CODE_LOST
from noded.runtime.process._zygote import fork_refusal
from tide.dev import DevCluster, parser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

IDENTITY = """
import logging
logging.basicConfig(level=logging.INFO, format="TIDE-LOG %(message)s")  # before runpod's: it must win
logging.getLogger("probe").info("configured by the handler")

import multiprocessing, os, random, sys
import aiohttp  # preloaded in the zygote: a shared module object would leak marks across workers
import runpod
from runpod.serverless.modules import rp_http, rp_job, rp_scale, worker_state

SEEN = []


def handler(job):
    mark = job["input"]["mark"]
    SEEN.append(mark)
    aiohttp._tide_marks = [*getattr(aiohttp, "_tide_marks", []), mark]
    keys = ("RUNPOD_POD_ID", "RUNPOD_ENDPOINT_ID", "RUNPOD_AI_API_KEY", "CUDA_VISIBLE_DEVICES", "GREETING")
    return {
        "pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(), "file": __file__,
        "env": {k: os.environ.get(k, "") for k in keys},
        "job_get_url": rp_job.JOB_GET_URL, "job_done_url": rp_http.JOB_DONE_URL,
        "worker_id": worker_state.WORKER_ID, "seen": list(SEEN), "shared": aiohttp._tide_marks,
        "authkey": multiprocessing.current_process().authkey.hex(), "random": random.random(),
        "fast": getattr(rp_scale.JobScaler, "_tide_fast_worker", False),
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
"""


def _dev_args(state_dir: Path) -> argparse.Namespace:
    args = parser().parse_args(["--port", "0", "--api-key", "prewarm-admin", "--gpus", "2xH100-80GB"])
    args.state_dir, args.prewarm, args.no_flashboot = str(state_dir), True, True
    return args


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[DevCluster]:
    cluster = DevCluster(_dev_args(tmp_path / "state"))
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


async def _runsync(http: aiohttp.ClientSession, dev: DevCluster, ep: str, mark: str) -> dict[str, Any]:
    async with http.post(f"{dev.url}/v2/{ep}/runsync", json={"input": {"mark": mark}}) as resp:
        body = await resp.json()
    assert body.get("status") == "COMPLETED", body
    return {**body["output"], "workerId": body["workerId"]}


async def _until(check: Any, timeout: float = 30.0) -> None:
    """Until ``check()`` (a coroutine function or a plain one) is true; bounded."""
    async with asyncio.timeout(timeout):
        while not (await check() if asyncio.iscoroutinefunction(check) else check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_forked_runpod_workers_serve_with_their_own_identity_and_state(
    dev: DevCluster, tmp_path: Path
) -> None:
    agent = dev._agents[0]
    assert await agent.runtime.prewarmed()  # workers started from here on are forked
    image = tmp_path / "image"
    image.mkdir()
    (image / "handler.py").write_text(IDENTITY)
    eps = {"a": f"pw-a-{uuid.uuid4().hex[:6]}", "b": f"pw-b-{uuid.uuid4().hex[:6]}"}
    out: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev.api_key}"}) as http:
        for key, ep in eps.items():
            spec = {"name": ep, "image": f"dir://{image}", "workersMin": 1, "workersMax": 1}
            spec["env"] = {"GREETING": f"hello {key}"}
            async with http.post(f"{dev.url}/admin/v1/endpoints", json=spec) as resp:
                assert resp.status < 300, await resp.text()
        for key, ep in eps.items():
            out[key] = [await _runsync(http, dev, ep, f"{key}1"), await _runsync(http, dev, ep, f"{key}2")]
    workers_dir = dev.state_dir / "nodes" / "node-1" / "workers"
    for key, ep in eps.items():
        first, second = out[key]
        worker = first["workerId"]
        assert second["workerId"] == worker and second["pid"] == first["pid"]
        assert "prewarm: forked" in (workers_dir / worker / "shim.log").read_text()
        assert first["fast"] is True  # the fast worker patched the SDK in the forked worker (issue 17)
        # Its own identity: env, the URLs runpod built at import, sys.argv, cwd, __file__.
        env = first["env"]
        assert (env["RUNPOD_POD_ID"], env["RUNPOD_ENDPOINT_ID"], env["GREETING"]) == (
            worker,
            ep,
            f"hello {key}",
        )
        assert env["RUNPOD_AI_API_KEY"] and env["CUDA_VISIBLE_DEVICES"].startswith("GPU-")
        assert first["worker_id"] == worker
        assert first["job_get_url"].startswith(f"{dev.url}/v2/{ep}/job-take/{worker}")
        assert first["job_done_url"].startswith(f"{dev.url}/v2/{ep}/job-done/{worker}/")
        assert (first["argv"], first["cwd"], first["file"]) == (
            ["handler.py"],
            str(image),
            str(image / "handler.py"),
        )
        # Its own state: the handler's globals and the preloaded modules' are per process.
        assert (second["seen"], second["shared"]) == ([f"{key}1", f"{key}2"], [f"{key}1", f"{key}2"])
        # The handler's logging config won: the zygote configured none.
        logs = await agent.runtime.logs(worker, tail=1000)
        assert "TIDE-LOG configured by the handler" in logs
        # The ping process (multiprocessing, forked from the worker) reached the coordinator
        # with this worker's URL and token.
        view = dev._coordinator.view
        await _until(lambda ep=ep, w=worker, view=view: w in view.presence.get(ep, {}))
    a, b = out["a"][0], out["b"][0]
    assert a["pid"] != b["pid"] and a["env"]["RUNPOD_AI_API_KEY"] != b["env"]["RUNPOD_AI_API_KEY"]
    assert a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"]
    assert a["authkey"] != b["authkey"] and a["random"] != b["random"]


def test_tide_dev_prewarm_flag() -> None:
    assert parser().parse_args(["--no-prewarm"]).prewarm is False
    assert parser().parse_args(["--prewarm"]).prewarm is True


# -- the runtime on its own ------------------------------------------------------------------


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[tuple[ProcessRuntime, Path]]:
    """A runtime whose zygote preloads nothing (fast); ready before the test starts workers."""
    image = tmp_path / "image"
    image.mkdir()
    rt = ProcessRuntime(tmp_path / "state", prewarm=True, prewarm_modules=())
    assert await rt.prewarmed()
    yield rt, image
    for st in await rt.list():
        if st.state == "running":
            await rt.stop(st.id, grace=0)
    await rt.close()


async def _run(rt: ProcessRuntime, image: Path, code: str, **kw: Any) -> tuple[int | None, list[str], str]:
    """Run ``code`` as ``python -u main.py`` to its exit: (exit code, output lines, shim.log)."""
    (image / "main.py").write_text(code)
    spec = WorkerSpec(
        id=f"w-{uuid.uuid4().hex[:8]}",
        image=f"dir://{image}",
        command=[sys.executable, "-u", "main.py"],
        **kw,
    )
    await rt.create(spec)
    await rt.start(spec.id)
    status = await rt.wait(spec.id)
    shim_log = (Path(rt._root) / spec.id / "shim.log").read_text()
    return status.exit_code, await rt.logs(spec.id, tail=100), shim_log


@pytest.mark.parametrize(
    ("env", "shadow", "reason"),
    [
        ({"LD_LIBRARY_PATH": "/opt/lib"}, False, "LD_LIBRARY_PATH is set"),
        ({"PYTHONHASHSEED": "0"}, False, "PYTHONHASHSEED is set"),
        ({"TIDE_PREWARM": "0"}, False, "TIDE_PREWARM is off"),
        ({}, True, "shadows the preloaded module json"),
    ],
)
async def test_prewarm_execs_what_it_must_not_fork(
    pool: tuple[ProcessRuntime, Path], env: dict[str, str], shadow: bool, reason: str
) -> None:
    rt, image = pool
    if shadow:  # a fresh interpreter would import this json, not the one the zygote holds
        (image / "json.py").write_text("VALUE = 'mine'\n")
    code = "import os, json\nprint(os.environ.get('LD_LIBRARY_PATH'), getattr(json, 'VALUE', 'stdlib'))\n"
    exit_code, lines, shim_log = await _run(rt, image, code, env=env)
    assert exit_code == 0
    assert lines == [f"{env.get('LD_LIBRARY_PATH')} {'mine' if shadow else 'stdlib'}"]
    assert "prewarm: exec (" in shim_log and reason in shim_log


async def test_prewarm_handler_exit_paths(pool: tuple[ProcessRuntime, Path]) -> None:
    rt, image = pool
    code, lines, shim_log = await _run(rt, image, "import sys\nprint('bye')\nsys.exit(3)\n")
    assert (code, lines) == (3, ["bye"]) and "prewarm: forked" in shim_log
    code, lines, _ = await _run(rt, image, "def f():\n    raise ValueError('boom')\n\nf()\n")
    assert code == 1
    assert lines[0] == "Traceback (most recent call last):" and 'main.py", line 4, in <module>' in lines[1]
    assert lines[-1] == "ValueError: boom"
    code, lines, _ = await _run(rt, image, "def (:\n")
    assert code == 1 and lines[-1].startswith("SyntaxError")
    code, lines, _ = await _run(
        rt, image, "import sys, __main__\nprint(__name__, sys.argv, __main__.__file__)\n"
    )
    assert lines == [f"__main__ ['main.py'] {image / 'main.py'}"]


async def test_prewarm_multiprocessing_in_a_forked_worker(pool: tuple[ProcessRuntime, Path]) -> None:
    rt, image = pool
    code = (
        "import multiprocessing as mp\n"
        "def work(q):\n    q.put('from child')\n"
        "if __name__ == '__main__':\n"
        "    for method in ('fork', 'spawn'):\n"
        "        ctx = mp.get_context(method)\n"
        "        q = ctx.Queue()\n"
        "        p = ctx.Process(target=work, args=(q,))\n"
        "        p.start(); print(method, q.get(timeout=30)); p.join()\n"
    )
    exit_code, lines, shim_log = await _run(rt, image, code)
    assert (exit_code, lines) == (0, ["fork from child", "spawn from child"]), lines
    assert "prewarm: forked" in shim_log


async def test_prewarm_default_sigterm_and_a_dead_shim(pool: tuple[ProcessRuntime, Path]) -> None:
    rt, image = pool
    (image / "sleep.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    for kill_shim in (False, True):
        spec = WorkerSpec(
            id=f"w-{uuid.uuid4().hex[:8]}", image=f"dir://{image}", command=[sys.executable, "-u", "sleep.py"]
        )
        await rt.create(spec)
        await rt.start(spec.id)

        async def ready(worker: str = spec.id) -> bool:
            return "ready" in await rt.logs(worker)

        await _until(ready)
        state = msgspec.json.decode((Path(rt._root) / spec.id / "state.json").read_bytes())
        if not kill_shim:
            os.kill(state["shim_pid"], signal.SIGTERM)  # forwarded: the worker dies of SIGTERM
            assert (await rt.wait(spec.id)).exit_code == 128 + signal.SIGTERM
            continue
        os.kill(state["shim_pid"], signal.SIGKILL)
        assert (await rt.status(spec.id)).state == "running"  # its worker lives on, adopted by pid
        os.killpg(state["pid"], signal.SIGKILL)
        assert (await rt.wait(spec.id)).exit_code == EXIT_CODE_LOST


async def test_prewarm_without_its_zygote_workers_exec(pool: tuple[ProcessRuntime, Path]) -> None:
    rt, image = pool
    (image / "sleep.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    running = WorkerSpec(id="w-before", image=f"dir://{image}", command=[sys.executable, "-u", "sleep.py"])
    await rt.create(running)
    await rt.start(running.id)
    assert rt._pool is not None and rt._pool._proc is not None
    rt._pool._proc.kill()
    rt._pool._proc.wait()
    code, lines, shim_log = await _run(rt, image, "print('still served')\n")
    assert (code, lines) == (0, ["still served"]) and "prewarm:" not in shim_log  # the plain shim
    assert (await rt.status(running.id)).state == "running"  # what the zygote forked lives on


async def test_prewarm_module_that_fails_to_import(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "state", prewarm=True, prewarm_modules=("no_such_module_tide",))
    try:
        assert await rt.prewarmed()
        assert rt._pool is not None and "no_such_module_tide" in rt._pool.report["failed"]
    finally:
        await rt.close()


def _gpu_uuids() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


async def test_prewarm_torch_zygote_never_touches_cuda(tmp_path: Path) -> None:
    """torch preloaded: workers are forked, compute, and see exactly their CUDA_VISIBLE_DEVICES
    (on a GPU host: none, then one GPU they can allocate on; elsewhere the CPU half only)."""
    pytest.importorskip("torch")
    rt = ProcessRuntime(tmp_path / "state", prewarm=True, prewarm_modules=("torch",))
    image = tmp_path / "image"
    image.mkdir()
    code = (
        "import os, torch\n"
        "n = torch.cuda.device_count()\n"
        "on_gpu = float(torch.ones(2, device='cuda').sum()) if n else 0.0\n"
        "on_cpu = float((torch.ones(8, 8) @ torch.ones(8, 8)).sum())\n"
        "print(os.environ['CUDA_VISIBLE_DEVICES'] or '-', n, on_cpu, on_gpu)\n"
    )
    try:
        assert await rt.prewarmed(120)
        gpus = _gpu_uuids()
        for devices in [[], *([gpus[:1]] if gpus else [])]:
            exit_code, lines, shim_log = await _run(rt, image, code, devices=devices)
            assert "prewarm: forked" in shim_log and exit_code == 0, lines
            assert lines == [f"{devices[0]} 1 512.0 2.0" if devices else "- 0 512.0 0.0"]
    finally:
        await rt.close()


# What a fresh interpreter shows of its command line: stdio buffering, -B, -O/-OO, argv, sys.path.
PROBE = """
"docstring"
import sys
out, err = sys.stdout, sys.stderr
print(type(out.buffer).__name__, out.write_through, type(err.buffer).__name__, err.line_buffering)
print(sys.argv, sys.path[0], sys.executable)
print(sys.dont_write_bytecode, __debug__, sys.flags.optimize, __doc__)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["python", "main.py", "a", "b"],
        ["python3", "-u", "main.py"],
        [sys.executable, "-u", "main.py", "--flag", "x"],
        ["python", "-B", "main.py"],
        ["python", "-uB", "main.py"],
        ["python", "-s", "-E", "main.py"],
        ["python", "-O", "main.py"],
        ["python", "-OO", "-u", "main.py"],
        ["python", "{image}/main.py", "x"],
        ["python3", "sub/main.py"],
    ],
)
async def test_prewarm_forks_every_python_command_form_as_exec_would_run_it(
    pool: tuple[ProcessRuntime, Path], command: list[str]
) -> None:
    """Each form is forked from a zygote (one at its -O level), and prints what exec prints."""
    rt, image = pool
    (image / "sub").mkdir()
    for d in (image, image / "sub"):
        (d / "main.py").write_text(PROBE)
    command = [c.format(image=image) for c in command]
    plan = plan_python_launch(command, sys.executable)
    assert isinstance(plan, Fork)
    zygote = rt._pool_for(plan.start_flags)
    assert zygote is not None and await asyncio.to_thread(zygote.wait_ready, 60)
    seen = {}
    for path, env in (("fork", {}), ("exec", {"TIDE_PREWARM": "0"})):
        spec = WorkerSpec(id=f"w-{uuid.uuid4().hex[:8]}", image=f"dir://{image}", command=command, env=env)
        await rt.create(spec)
        await rt.start(spec.id)
        assert (await rt.wait(spec.id)).exit_code == 0
        shim_log = (Path(rt._root) / spec.id / "shim.log").read_text()
        assert ("prewarm: forked" if path == "fork" else "prewarm: exec (TIDE_PREWARM is off)") in shim_log
        seen[path] = await rt.logs(spec.id)
    assert seen["fork"] == seen["exec"]
    buffering = (
        "FileIO True FileIO False" if "u" in plan.flags else "BufferedWriter False BufferedWriter True"
    )
    assert seen["fork"][0] == buffering


async def test_prewarm_execs_other_commands(pool: tuple[ProcessRuntime, Path]) -> None:
    rt, image = pool
    (image / "mod.py").write_text("print('m')\n")
    cases = {"python -c": "c", "/bin/sh -c": "sh", "python -m": "m"}
    for command, printed in zip(
        (["python", "-c", "print('c')"], ["/bin/sh", "-c", "echo sh"], ["python", "-m", "mod"]),
        cases.values(),
        strict=True,
    ):
        spec = WorkerSpec(id=f"w-{uuid.uuid4().hex[:8]}", image=f"dir://{image}", command=command)
        await rt.create(spec)
        await rt.start(spec.id)
        assert (await rt.wait(spec.id)).exit_code == 0
        assert "prewarm:" not in (Path(rt._root) / spec.id / "shim.log").read_text()  # the plain shim
        assert await rt.logs(spec.id) == [printed]


def test_fork_refusal() -> None:
    py = ["/usr/bin/python3", "-u", "handler.py"]
    ok = {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": "/x",
        "CUDA_VISIBLE_DEVICES": "",
    }
    assert fork_refusal(py, ok, ["runpod"]) == ""
    assert "not `python [-uBsEO] SCRIPT" in fork_refusal(["/usr/bin/python3", "-c", "pass"], ok, [])
    assert fork_refusal(["/usr/bin/python3", "handler.py"], ok, []) == ""  # no -u: forked, buffered
    assert "-O level 1, this zygote at 0" in fork_refusal(["/usr/bin/python3", "-O", "h.py"], ok, [])
    assert fork_refusal(["/usr/bin/python3", "-OB", "h.py"], ok, [], optimize=1) == ""
    assert "PYTHONHASHSEED" in fork_refusal(py, {**ok, "PYTHONHASHSEED": "0"}, [])
    assert fork_refusal(["python", "-E", "h.py"], {**ok, "PYTHONHASHSEED": "0"}, []) == ""  # ignored
    assert "OMP_NUM_THREADS" in fork_refusal(py, {**ok, "OMP_NUM_THREADS": "4"}, ["torch"])
    assert fork_refusal(py, {**ok, "OMP_NUM_THREADS": "4"}, ["aiohttp"]) == ""  # no pool sized at load
    assert "YARL_NO_EXTENSIONS" in fork_refusal(py, {**ok, "YARL_NO_EXTENSIONS": "1"}, [])
    assert "SSL_CERT_FILE" in fork_refusal(py, {**ok, "SSL_CERT_FILE": "/ca.pem"}, [])
    assert "HF_HOME" in fork_refusal(py, {**ok, "HF_HOME": "/models"}, ["transformers"])
    assert "locale" in fork_refusal(py, {**ok, "LC_ALL": "de_DE.ISO-8859-1"}, [])
    assert fork_refusal(py, {**ok, "LC_ALL": "en_US.utf8"}, []) == ""


FAST_PROBE = """
from runpod.serverless.modules import rp_scale
print(getattr(rp_scale.JobScaler, "_tide_fast_worker", False))
"""


@pytest.mark.parametrize(
    ("env", "patched", "path"),
    [
        ({}, True, "prewarm: forked"),
        ({"TIDE_PREWARM": "0"}, True, "prewarm: exec"),
        ({"TIDE_FAST_WORKER": "0"}, False, "prewarm: forked"),
    ],
)
async def test_prewarm_workers_get_the_fast_worker_on_both_paths(
    pool: tuple[ProcessRuntime, Path], env: dict[str, str], patched: bool, path: str
) -> None:
    """Forked and exec'd workers patch runpod's JobScaler at its import (issue 17); the
    endpoint's TIDE_FAST_WORKER=0 leaves the SDK as it is, PYTHONPATH untouched."""
    rt, _image = pool
    exit_code, lines, shim_log = await _run(rt, _image, FAST_PROBE, env=env)
    assert exit_code == 0, lines
    assert lines[-1] == str(patched) and path in shim_log
