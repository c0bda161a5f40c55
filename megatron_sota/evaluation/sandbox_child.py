"""The child side of the code sandbox: isolates itself, then runs one untrusted Python program (see sandbox.py).
Run as a script by sandbox.py only (stdlib imports, no package imports); it must never run the program with a
layer missing that the harness required."""

import ctypes
import json
import os
import resource
import sys

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWPID = 0x20000000
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522
# Landlock: syscall numbers are the same on every architecture (added after the syscall table unification).
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_WRITE_FILE = 1 << 1
# Every access right that changes the file system; reads and execution stay unrestricted so Python can start.
_FS_WRITES_V1 = _FS_WRITE_FILE | sum(1 << bit for bit in range(4, 13))  # remove/make dir, file, char, sock, fifo...
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _prctl(option: int, arg: int, arg3: int = 0) -> None:
    args = (ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(_libc.prctl(ctypes.c_int(option), *args), "prctl")


def _drop_privileges(uid: int) -> None:
    """Become `uid` ("nobody": RLIMIT_NPROC then applies and root's write access goes), keeping only the capability
    to read and traverse directories: the interpreter may live under a home directory that "nobody" cannot enter."""
    _prctl(_PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    keep = 1 << _CAP_DAC_READ_SEARCH
    data = (ctypes.c_uint32 * 6)(keep, keep, keep, 0, 0, 0)  # effective, permitted, inheritable (x2 words)
    _check(_libc.capset(header, data), "capset")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH)  # survives execve of the interpreter


def _set_rlimits(limits: dict) -> None:
    cpu = max(1, int(limits["cpu_seconds"] + 0.999))
    # Soft limit sends SIGXCPU; the hard limit one second later kills a program that catches it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "file_bytes"), ("RLIMIT_NPROC", "processes")):
        value = int(limits[key])
        resource.setrlimit(getattr(resource, name), (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_abi() -> int:
    result = _libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION)
    return max(0, int(result))


def _landlock(work_dir: str, fs: bool, net: bool) -> None:
    """Restrict this process and its descendants: file-system changes only beneath `work_dir` (and writes to
    /dev/null) when `fs`; no TCP bind or connect when `net`."""
    abi = _landlock_abi()
    writes = _FS_WRITES_V1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(writes if fs else 0, (_NET_BIND_TCP | _NET_CONNECT_TCP) if net else 0)
    size = ctypes.sizeof(_RulesetAttr) if net else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _check(_libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0),
                     "landlock_create_ruleset")
    try:
        rules = [(work_dir, writes), ("/dev/null", _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0))] if fs else []
        for path, allowed in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(allowed, fd)
                _check(_libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
                       "landlock_add_rule")
            finally:
                os.close(fd)
        _check(_libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _try(layers: dict, errors: dict, name: str, skip: set, step) -> None:
    if name in skip:
        layers[name] = False
        return
    try:
        step()
        layers[name] = True
    except OSError as err:  # a kernel without the feature, or a container that forbids it: report, go on
        layers[name] = False
        errors[name] = str(err)


def _enter_namespaces(layers: dict, errors: dict, skip: set) -> None:
    """Root creates network and PID namespaces directly (it keeps its real uid for the privilege drop later);
    anyone else needs a user namespace to own them."""
    wanted = {"network_namespace": _CLONE_NEWNET, "pid_namespace": _CLONE_NEWPID}
    flags = sum(flag for name, flag in wanted.items() if name not in skip)
    if os.geteuid() != 0 and "user_namespace" not in skip and flags:
        flags |= _CLONE_NEWUSER
    try:
        if flags:
            _unshare(flags)
        ok = True
    except OSError as err:
        ok = False
        errors["namespaces"] = str(err)
    layers["user_namespace"] = ok and bool(flags & _CLONE_NEWUSER)
    for name, flag in wanted.items():
        layers[name] = ok and bool(flags & flag)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells report it


def _wait_for(child: int) -> int:
    """Reap every process that ends (as a PID namespace's init, orphans come to us) until `child` does."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            return _exit_code(status)


def _run_program(config: dict, layers: dict, errors: dict) -> None:
    """In the process that becomes the program: drop privileges, apply limits and Landlock, report, exec."""
    skip = set(config["skip"])
    if os.geteuid() == 0:
        _try(layers, errors, "drop_privileges", skip, lambda: _drop_privileges(config["uid"]))
    else:
        layers["drop_privileges"] = False
    _try(layers, errors, "rlimits", skip, lambda: _set_rlimits(config["limits"]))
    _try(layers, errors, "no_new_privs", skip, lambda: _prctl(_PR_SET_NO_NEW_PRIVS, 1))
    abi = _landlock_abi()
    fs_ok = abi >= 1 and "landlock_fs" not in skip
    net_ok = abi >= 4 and "landlock_net" not in skip
    if fs_ok or net_ok:
        _try(layers, errors, "landlock", set(), lambda: _landlock(config["work_dir"], fs_ok, net_ok))
    landlock = layers.pop("landlock", False)
    layers["landlock_fs"], layers["landlock_net"] = landlock and fs_ok, landlock and net_ok
    missing = [name for name in config["require"] if not layers.get(name)]
    report = {"layers": layers, "errors": errors, "ready": not missing, "missing": missing}
    os.write(config["report_fd"], json.dumps(report).encode())
    os.close(config["report_fd"])
    if missing:
        os._exit(_SETUP_FAILED)
    os.execv(sys.executable, [sys.executable, "-I", config["program"]])


def main() -> None:
    config = json.loads(sys.argv[1])
    layers, errors = {}, {}
    _enter_namespaces(layers, errors, set(config["skip"]))
    init = os.fork()  # with a new PID namespace this child is its init: when it exits, everything inside dies
    if init == 0:
        program = os.fork()
        if program == 0:
            try:
                _run_program(config, layers, errors)
            except BaseException as err:  # never let the program run half-isolated
                sys.stderr.write(f"sandbox setup failed: {err!r}\n")
            os._exit(_SETUP_FAILED)
        os.close(config["report_fd"])
        os._exit(_wait_for(program))
    os.close(config["report_fd"])
    os._exit(_wait_for(init))


if __name__ == "__main__":
    main()
