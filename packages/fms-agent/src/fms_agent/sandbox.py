"""A Python code tool run in a separate process under bubblewrap: an OS boundary, not a promise.

A model that writes code will sooner or later write code that reads secrets, deletes files, opens
sockets or never stops, by accident or because a prompt told it to. Checks inside the Python
process (an AST filter, a restricted `exec`) are bypassed by anyone who knows the language well
enough; the boundary must be one the kernel enforces. [run_python][fms_agent.sandbox.run_python]
starts the interpreter under `bwrap` (bubblewrap) with:

- new PID, network, IPC and UTS namespaces: no network interface but a down loopback, no view of
  the host's processes;
- a filesystem made of read-only binds of `/usr`, `/lib*`, `/bin` and the interpreter's prefix,
  and a fresh tmpfs at `/tmp` (the working directory) that vanishes with the process: the host's
  home, `/etc` and the caller's files are not there;
- resource limits set in the child before `exec`: CPU seconds (`RLIMIT_CPU`), address space
  (`RLIMIT_AS`), processes (`RLIMIT_NPROC`), file size (`RLIMIT_FSIZE`);
- a wall-clock timeout that kills the whole process group, and output read up to a byte limit.

The process limit needs care. The kernel counts `RLIMIT_NPROC` per real user and does not enforce
it for the global root user (kernel uid 0) at all: a user namespace does not help, because uid 0
inside a namespace made by root is still kernel uid 0. So the identity the code runs as depends on
the caller:

- an ordinary user: bubblewrap adds a user namespace (`--unshare-all`) and the code runs as that
  user, whose process count the limit binds;
- root (as containers and CI often run): no user namespace; inside the sandbox `setpriv` changes
  to the unprivileged uid and gid [SANDBOX_UID][fms_agent.sandbox.SANDBOX_UID] (`nobody`), clears
  the supplementary groups, empties the inheritable and bounding capability sets and sets
  `no_new_privs` before the interpreter starts. The limit then binds that uid, so a fork bomb stops
  at `max_processes` within a fraction of a second instead of loading the machine until the
  wall-clock kill. The count is per uid: processes `nobody` already runs on the host count too.

Without `bwrap` on PATH it raises [SandboxUnavailable][fms_agent.sandbox.SandboxUnavailable]
naming bubblewrap: it never falls back to running the code unconfined.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SANDBOX_UID", "SandboxResult", "SandboxUnavailable", "run_python"]

SANDBOX_UID = 65534
"""The uid and gid (`nobody`) the code runs as when the caller is root."""


class SandboxUnavailable(RuntimeError):
    """bubblewrap (`bwrap`) is not installed or cannot create namespaces here."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run returned.

    Attributes:
        returncode: the exit status (negative: killed by that signal).
        stdout: the standard output, cut at the byte limit.
        stderr: the standard error, cut at the byte limit.
        timed_out: the wall-clock timeout killed it.
        truncated: some output was dropped at the limit.
        seconds: wall time of the run.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """Exited 0 within the time limit."""
        return self.returncode == 0 and not self.timed_out


def _command(python: str) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "the Python sandbox needs bubblewrap (`bwrap`) on PATH; install it "
            "(apt-get install bubblewrap) - code is never run without it"
        )
    as_root = os.geteuid() == 0
    if as_root:
        # no user namespace: uid 0 in one is still kernel uid 0, for which RLIMIT_NPROC is void
        unshare = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        unshare += ["--unshare-cgroup-try"]
    else:
        unshare = ["--unshare-all"]
    prefix = Path(sys.base_prefix).resolve()
    cmd = [bwrap, *unshare, "--die-with-parent", "--new-session"]
    for d in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if Path(d).is_symlink():
            cmd += ["--symlink", os.readlink(d), d]
        elif Path(d).is_dir():
            cmd += ["--ro-bind", d, d]
    if not str(prefix).startswith("/usr/"):
        cmd += ["--ro-bind", str(prefix), str(prefix)]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    cmd += ["--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
    cmd += ["--setenv", "HOME", "/tmp"]
    if as_root:
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
        if setpriv is None:
            raise SandboxUnavailable(
                "running as root, the sandbox drops to an unprivileged uid with `setpriv` "
                "(util-linux), which is not in /usr/bin or /bin; install util-linux"
            )
        cmd += [setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
        cmd += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [*cmd, python, "-I", "-S", "-"]


def run_python(
    code: str,
    *,
    timeout: float = 10.0,
    cpu_seconds: int = 10,
    memory_bytes: int = 512 * 2**20,
    max_processes: int = 16,
    max_output: int = 64 * 1024,
) -> SandboxResult:
    """Run `code` with the interpreter this package runs on, inside the sandbox.

    Raises:
        SandboxUnavailable: bubblewrap is missing or cannot start.
        ValueError: a limit is not positive.
    """
    for name, value in (
        ("timeout", timeout),
        ("cpu_seconds", cpu_seconds),
        ("memory_bytes", memory_bytes),
        ("max_processes", max_processes),
        ("max_output", max_output),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    python = str(
        Path(sys.base_prefix).resolve()
        / "bin"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    cmd = _command(python)  # the program is read from stdin: no argv length limit

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=limits,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(code.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    if proc.returncode != 0 and not out and err.startswith((b"bwrap:", b"setpriv:")):
        raise SandboxUnavailable(
            f"bubblewrap could not start the sandbox: {err[:300].decode(errors='replace')}"
        )
    truncated = len(out) > max_output or len(err) > max_output
    return SandboxResult(
        proc.returncode,
        out[:max_output].decode("utf-8", "replace"),
        err[:max_output].decode("utf-8", "replace"),
        timed_out,
        truncated,
        time.monotonic() - t0,
    )
