"""A one-machine stand-in for the SLURM commands submitit calls: ``sbatch``, ``srun``, ``sacct``, ``scancel``.

It lets the tests submit a sweep through ``hydra/launcher=submitit_slurm`` exactly as on a cluster — the
real submitit code writes the real sbatch script, and each job's ``srun`` starts one process per task with
the environment SLURM gives them (``SLURM_PROCID``, ``SLURM_NTASKS``, ...), which is what Lightning's
``SLURMEnvironment`` and submitit's ``JobEnvironment`` read. Only one node (this machine) exists.

:func:`install` writes the four commands into a folder to put first on ``PATH``; their state (job ids,
the parsed ``#SBATCH`` options, job states) lives in ``$FAKE_SLURM_DIR``. Jobs of an array run one after
another in a detached runner, as a cluster with a single free node would run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "scancel")


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the fake commands into ``bin_dir``; return the environment that activates them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        exe = bin_dir / name
        exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {name} "$@"\n')
        exe.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state_dir)}


def _state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def sbatch_options(script: str) -> dict[str, str]:
    """The ``#SBATCH --key=value`` options of a batch script."""
    options = {}
    for match in re.finditer(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M):
        options[match.group(1)] = (match.group(2) or "").strip()
    return options


def _array_indices(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    spec = spec.split("%", 1)[0]
    indices: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        indices += range(int(lo), int(hi or lo) + 1)
    return indices


def _expand(pattern: str, env: dict[str, str], task: str = "0") -> str:
    job = env.get("SLURM_JOB_ID", "0")
    values = {"j": job, "A": env.get("SLURM_ARRAY_JOB_ID", job), "a": env.get("SLURM_ARRAY_TASK_ID", "0"), "t": task}
    return re.sub(r"%([jAat%])", lambda m: "%" if m.group(1) == "%" else values[m.group(1)], pattern)


def _set_state(job_key: str, state: str) -> None:
    path = _state_dir() / "states.json"
    states = json.loads(path.read_text()) if path.exists() else {}
    states[job_key] = state
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(states))
    tmp.replace(path)


def sbatch(argv: list[str]) -> int:
    script_path = Path(argv[-1])
    options = sbatch_options(script_path.read_text())
    if int(options.get("nodes", "1")) != 1:
        print(f"sbatch: error: fake SLURM has one node, --nodes={options['nodes']} asked", file=sys.stderr)
        return 1
    counter = _state_dir() / "next_job_id"
    job_id = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job_id + 100))
    # like sbatch, keep a copy of the script: submitit moves the file once it has the job id
    script_copy = _state_dir() / f"{job_id}.sh"
    script_copy.write_text(script_path.read_text())
    (_state_dir() / f"{job_id}.sbatch.json").write_text(json.dumps({"script": str(script_copy), "options": options}))
    indices = _array_indices(options.get("array"))
    for key in ([f"{job_id}_{i}" for i in indices] if indices is not None else [str(job_id)]):
        _set_state(key, "PENDING")
    runner = subprocess.Popen([sys.executable, __file__, "_run", str(job_id)], start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (_state_dir() / f"{job_id}.pid").write_text(str(runner.pid))
    print(f"Submitted batch job {job_id}")
    return 0


def _run(argv: list[str]) -> int:
    """Run a submitted job (each array task in turn) the way SLURM starts a batch script."""
    job_id = int(argv[0])
    submitted = json.loads((_state_dir() / f"{job_id}.sbatch.json").read_text())
    options = submitted["options"]
    tasks_per_node = options.get("ntasks-per-node", "1")
    base_env = {
        **os.environ, "SLURM_JOB_NAME": options.get("job-name", "fake"), "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": tasks_per_node, "SLURM_NTASKS": tasks_per_node,
        "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost", "SLURM_SUBMIT_DIR": os.getcwd(),
    }
    indices = _array_indices(options.get("array"))
    for offset, index in enumerate(indices if indices is not None else [None]):
        env = dict(base_env)
        if index is None:
            key = env["SLURM_JOB_ID"] = str(job_id)
        else:
            key = f"{job_id}_{index}"
            env.update(SLURM_JOB_ID=str(job_id + 1 + offset), SLURM_ARRAY_JOB_ID=str(job_id),
                       SLURM_ARRAY_TASK_ID=str(index))
        _set_state(key, "RUNNING")
        with open(_expand(options.get("output", "slurm-%j.out"), env), "a") as out, \
                open(_expand(options.get("error", options.get("output", "slurm-%j.out")), env), "a") as err:
            code = subprocess.call(["/bin/bash", submitted["script"]], env=env, stdout=out, stderr=err)
        _set_state(key, "COMPLETED" if code == 0 else "FAILED")
    return 0


def srun(argv: list[str]) -> int:
    """``srun [--unbuffered] [--output F] [--error F] [other flags] command...``: one process per task."""
    output = error = None
    while argv and argv[0].startswith("-"):
        flag = argv.pop(0)
        if flag in ("--output", "-o"):
            output = argv.pop(0)
        elif flag in ("--error", "-e"):
            error = argv.pop(0)
        elif flag.startswith(("--output=", "--error=")):
            output, error = (flag.split("=", 1)[1], error) if flag.startswith("--output") else (output, flag.split("=", 1)[1])
    command = argv[0] if len(argv) == 1 else shlex.join(argv)
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    with contextlib.ExitStack() as files:
        procs = []
        for rank in range(ntasks):
            env = {**os.environ, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
                   "SLURM_STEP_ID": "0"}
            out = files.enter_context(open(_expand(output, env, str(rank)), "a")) if output else None
            err = files.enter_context(open(_expand(error, env, str(rank)), "a")) if error else out
            procs.append(subprocess.Popen(["/bin/bash", "-c", command], env=env, stdout=out, stderr=err))
        codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


def sacct(argv: list[str]) -> int:
    """``sacct -o JobID,State,NodeList --parsable2 -j ID ...``"""
    wanted = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-j"}
    path = _state_dir() / "states.json"
    states = json.loads(path.read_text()) if path.exists() else {}
    print("JobID|State|NodeList")
    for key, state in states.items():
        if key.split("_")[0] in wanted:
            print(f"{key}|{state}|localhost")
    return 0


def scancel(argv: list[str]) -> int:
    ids = [a for a in argv if a[:1].isdigit()]
    for job in ids:
        pid_file = _state_dir() / f"{job.split('_')[0]}.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    return 0


if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[2:]
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "_run": _run}[name](args))
