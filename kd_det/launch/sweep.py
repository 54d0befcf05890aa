"""Many runs: a set of configs x seeds, each the ordinary ``train_net.py`` / ``train_cls.py`` run, then the report.

Every run is ``OUTPUT_DIR/<config>/seed<k>`` with ``SEED k``; a complete run (as
:func:`kd_det.evaluation.runs.read_run` says) is skipped, any other is started with the
script's own ``--resume``, so a sweep can simply be run again after a crash. Executors:

* ``serial``: one run after another (default);
* ``local``: ``--jobs N`` runs at a time on this machine, each with ``cores / (N x processes)``
  threads (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, which torch reads at start-up);
* ``slurm``: one submitit job per run, ``--nodes`` x ``--gpus-per-node`` tasks, each task one
  training process that joins torch.distributed with the rank and world size Slurm gives it
  (:class:`submitit.JobEnvironment`); a job stopped at its time limit is requeued and resumes;
* ``submitit-local``: the same job function through :class:`submitit.LocalExecutor` (one node),
  to try the Slurm path on one machine (and in the tests).

Configs are named by file globs or by the paper-table row they reproduce,
``dataset:teacher-student:method`` in the vocabulary of ``kd_det/data/paper_results.csv``
(e.g. ``coco2017_val:R101-R18:DKD``, ``cifar100:resnet56-resnet20:CKD``), matched against each
config's labels (``KD.LABEL.*``, both tasks; an empty dataset label is ``DATASETS.TEST[0]`` for detection,
``DATA.NAME`` for classification). ``tools/sweep.py`` is the command line.
"""
import concurrent.futures
import difflib
import glob
import os
import subprocess
import sys
import threading
import time
import zlib

from .. import REPO_ROOT
from ..errors import ConfigError, UserError
from ..config.migration import upgrade_dict
from ..config.yaml_chain import merged_chain, yaml_chain
from ..evaluation.runs import COMPLETE, DATASET_ALIASES, config_labels, config_task as _task_of_dict, read_run

__all__ = ["SweepJob", "TrainTask", "resolve_configs", "config_row", "plan", "run_sweep", "EXECUTORS"]

CONFIGS_ROOT = os.path.join(REPO_ROOT, "configs")
TOOLS = os.path.join(REPO_ROOT, "tools")
EXECUTORS = ("serial", "local", "slurm", "submitit-local")
RESERVED = ("SEED", "OUTPUT_DIR")


class SweepJob:
    """One run of a sweep: a config file, a seed, its output folder and the overrides."""

    def __init__(self, config, name, seed, task, out_dir, opts=(), cwd=None):
        self.config, self.name, self.seed, self.task = os.path.abspath(config), name, int(seed), task
        self.out_dir, self.opts, self.cwd = os.path.abspath(out_dir), list(opts), cwd or os.getcwd()

    @property
    def label(self):
        return f"{self.name}/seed{self.seed}"

    def overrides(self):
        return [*self.opts, "SEED", str(self.seed), "OUTPUT_DIR", self.out_dir]

    def command(self, processes=1, python=None):
        """The training command line of this run (``processes`` > 1: one machine, that many processes)."""
        python = python or sys.executable
        if self.task == "detection":
            extra = ["--num-gpus", str(processes), "--dist-url", "auto"] if processes > 1 else []
            return [python, os.path.join(TOOLS, "train_net.py"), "--config-file", self.config, "--resume", *extra,
                    *self.overrides()]
        launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
            if processes > 1 else [python]
        return [*launcher, os.path.join(TOOLS, "train_cls.py"), "--config", self.config, "--resume",
                *self.overrides()]

    def state(self):
        """"done" (a complete run), "resume" (outputs of an unfinished run) or "new"."""
        if not os.path.isdir(self.out_dir) or not os.listdir(self.out_dir):
            return "new"
        return "done" if read_run(self.out_dir)["status"] == COMPLETE else "resume"

    def __repr__(self):
        return f"SweepJob({self.label}, {self.task}, {self.out_dir})"


# -- naming configs ---------------------------------------------------------------------------------------------

def _raw_yaml(path):
    """A yaml config with its ``_BASE_`` chain merged as plain dicts (enough to tell the task)."""
    return merged_chain(yaml_chain(path, missing_ok=True))


def config_task(path):
    """"classification" for a ``train_cls.py`` config, else "detection" (:func:`kd_det.evaluation.runs.config_task`
    on the file's yaml chain)."""
    return _task_of_dict(upgrade_dict(_raw_yaml(path))) or "detection"


def config_row(path, task=None):
    """(task, dataset, teacher, student, method, labels derived?) of a config, in the papers' vocabulary."""
    import yaml

    task = task or config_task(path)
    if task == "classification":
        from ..config.classification import load_cls_config as load
    else:
        from ..config.detection import load_config as load
    return (task, *config_labels(yaml.safe_load(load(path, []).dump()), task))


def _raw_row(path):
    """"dataset:teacher-student:method" from a config's own yaml chain (no config system), or None.

    A cheap first pass over every config; a hit is confirmed by :func:`config_row`.
    """
    import ast

    raw = upgrade_dict(_raw_yaml(path))
    label = (raw.get("KD") or {}).get("LABEL") or {}
    dataset, teacher, student, method = (label.get(k) or "" for k in ("DATASET", "TEACHER", "STUDENT", "METHOD"))
    if not dataset and _task_of_dict(raw) != "classification":
        tests = (raw.get("DATASETS") or {}).get("TEST") or ""
        if isinstance(tests, str):
            try:
                tests = ast.literal_eval(tests)
            except (ValueError, SyntaxError):
                tests = [tests]
        first = (list(tests) or [""])[0] if isinstance(tests, (list, tuple)) else str(tests)
        dataset = DATASET_ALIASES.get(first, first)
    if not (dataset and method and (teacher if method == "teacher" else student)):
        return None
    return f"{dataset}:{teacher}-{student}:{method}"


def _row_index(root=CONFIGS_ROOT):
    """{"dataset:teacher-student:method": [config paths]} of every config with explicit labels under ``root``."""
    index = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        if os.path.basename(path).startswith("Base-"):
            continue
        try:
            row = _raw_row(path)
        except (UserError, OSError, ValueError):
            continue  # unreadable yaml: it names no row
        if row:
            index.setdefault(row, []).append(path)
    return index


def _confirmed(spec, paths):
    """The ``paths`` whose full config (defaults, _BASE_ chain) really has the labels of row ``spec``."""
    out = []
    for path in paths:
        _, dataset, teacher, student, method, derived = config_row(path)
        if not derived and f"{dataset}:{teacher}-{student}:{method}".lower() == spec.lower():
            out.append(path)
    return out


def _is_row(spec):
    return spec.count(":") == 2 and "/" not in spec and not spec.endswith((".yaml", ".yml"))


def _name(path):
    """Name of a config inside the sweep's folder: its path under configs/ (else its file name), no extension."""
    ap = os.path.abspath(path)
    rel = os.path.relpath(ap, CONFIGS_ROOT)
    stem = rel if not rel.startswith("..") else os.path.basename(ap)
    return os.path.splitext(stem)[0]


def resolve_configs(specs):
    """Config files named by ``specs`` (globs or table rows), in order, each once.

    Raises:
        ConfigError: one sentence naming the spec that matches nothing.
    """
    out, index = [], None
    for spec in specs:
        if _is_row(spec) and not os.path.exists(spec):
            index = index if index is not None else _row_index()
            hits = _confirmed(spec, next((v for k, v in index.items() if k.lower() == spec.lower()), []))
            if not hits:
                close = difflib.get_close_matches(spec, list(index), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}" if close else ""
                if spec.lower().endswith(":teacher") and not hits:
                    hint += " (detection teachers are not trained here: train_net.py --eval-teacher measures them)"
                raise ConfigError(f"--configs {spec}: no config under {CONFIGS_ROOT} reproduces the table row "
                                  f"dataset:teacher-student:method {spec!r} (labels KD.LABEL.*){hint}.")
        else:
            hits = sorted(glob.glob(spec, recursive=True)) or sorted(
                glob.glob(os.path.join(REPO_ROOT, spec), recursive=True))
            hits = [h for h in hits if os.path.isfile(h) and h.endswith((".yaml", ".yml"))]
            if not hits:
                where = " or ".join(dict.fromkeys((os.getcwd(), REPO_ROOT)))
                raise ConfigError(f"--configs {spec} matches no .yaml file (from {where}), and is not a table row "
                                  "dataset:teacher-student:method.")
        for h in hits:
            if os.path.abspath(h) not in (os.path.abspath(p) for p in out):
                out.append(h)
    return out


# -- planning ---------------------------------------------------------------------------------------------------

def plan(specs, seeds, output_dir, opts=()):
    """The jobs of a sweep, configs outer, seeds inner; every config is loaded with the overrides first.

    Raises:
        ConfigError: one sentence on a bad spec, seed, override or config (nothing has run yet).
    """
    if not seeds:
        raise ConfigError("--seeds is empty; give at least one seed, e.g. --seeds 0 1 2.")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: seeds must be >= 0 (a negative SEED is random, "
                          "so the arms of one seed would not be paired).")
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; {opts[-1]!r} has no value.")
    for key in opts[::2]:
        if key in RESERVED:
            raise ConfigError(f"Override {key}: the sweep sets SEED (--seeds) and OUTPUT_DIR (--output-dir "
                              "<dir>/<config>/seed<k>) itself.")
    configs = resolve_configs(specs)
    names = [_name(c) for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"Two configs would share the output folder {os.path.join(output_dir, dup[0])}: "
                          "give configs with distinct paths under configs/ or distinct file names.")
    jobs = []
    for config, name in zip(configs, names):
        task = config_task(config)
        _check_loads(config, task, opts)
        for seed in dict.fromkeys(seeds):
            jobs.append(SweepJob(config, name, seed, task, os.path.join(output_dir, name, f"seed{seed}"), opts))
    return jobs


def _check_loads(config, task, opts):
    if task == "classification":
        from ..config.classification import load_cls_config

        load_cls_config(config, list(opts))
    else:
        from ..config.detection import load_config

        load_config(config, list(opts))


# -- executors --------------------------------------------------------------------------------------------------

def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _thread_env(threads):
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run_local(job, processes, threads, echo):
    """Run one job here, its output appended to ``<run>/sweep.log``; returns the return code."""
    os.makedirs(job.out_dir, exist_ok=True)
    with open(os.path.join(job.out_dir, "sweep.log"), "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(job.command(processes))}\n")
        log.flush()
        return subprocess.run(job.command(processes), stdout=log, stderr=subprocess.STDOUT, cwd=job.cwd,
                               env=_thread_env(threads)).returncode


class TrainTask:
    """The submitit job function of one run: each Slurm task is one training process.

    Rank, world size, local rank and the master address come from :class:`submitit.JobEnvironment`
    (``SLURM_*`` on a cluster, ``SUBMITIT_LOCAL_*`` under the local executor) and are handed to the
    training script as torch.distributed's ``env://`` variables; ``train_net.py`` / ``train_cls.py``
    then join one process group across all tasks and nodes. On a time-out or preemption submitit
    calls :meth:`checkpoint`, which requeues the same task: the script resumes from its last checkpoint.
    """

    def __init__(self, job, threads=None):
        self.job, self.threads = job, threads

    def __call__(self):
        import submitit

        env_info = submitit.JobEnvironment()
        env = _thread_env(self.threads or os.environ.get("SLURM_CPUS_PER_TASK"))
        world = env_info.num_tasks
        env.update(RANK=str(env_info.global_rank), WORLD_SIZE=str(world), LOCAL_RANK=str(env_info.local_rank),
                   LOCAL_WORLD_SIZE=str(world // env_info.num_nodes),
                   MASTER_ADDR="127.0.0.1" if env_info.num_nodes == 1 else env_info.hostnames[0],
                   MASTER_PORT=str(env.get("MASTER_PORT") or 20000 + zlib.crc32(str(env_info.job_id).encode()) % 20000))
        cmd = self.job.command(processes=1)
        print(f"{env_info}: {' '.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, env=env, cwd=self.job.cwd).returncode
        if rc:
            raise RuntimeError(f"{self.job.label}: {os.path.basename(cmd[1])} exited with code {rc} on rank "
                               f"{env_info.global_rank}.")
        return {"run": self.job.label, "rank": env_info.global_rank, "world_size": world}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.job, self.threads))


def _submitit_executor(kind, folder, nodes, tasks, gpus, opts):
    import submitit

    if kind == "submitit-local":
        if nodes != 1:
            raise ConfigError(f"--nodes {nodes}: submitit's local executor runs on one node; use --executor slurm.")
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=opts["timeout_min"], tasks_per_node=tasks, gpus_per_node=gpus)
        return ex
    if not _which("sbatch"):
        raise ConfigError("--executor slurm needs Slurm's sbatch on PATH; --executor submitit-local tries the same "
                          "jobs on this machine.")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = {"timeout_min": opts["timeout_min"], "nodes": nodes, "tasks_per_node": tasks, "gpus_per_node": gpus,
              "cpus_per_task": opts["cpus_per_task"], "name": "kd_det_sweep"}
    if opts.get("mem_gb"):
        params["mem_gb"] = opts["mem_gb"]
    if opts.get("partition"):
        params["slurm_partition"] = opts["partition"]
    if opts.get("slurm_args"):
        params["slurm_additional_parameters"] = dict(opts["slurm_args"])
    ex.update_parameters(**params)
    return ex


def _which(cmd):
    import shutil

    return shutil.which(cmd)


def run_sweep(jobs, executor="serial", jobs_at_once=1, processes=1, nodes=1, threads=None, folder=None,
              submitit_opts=None, gpus_per_node=None, echo=print):
    """Run every job that is not complete yet; returns {label: "skipped" | "done" | "failed: ..."}.

    Args:
        jobs: :func:`plan` output.
        executor: one of :data:`EXECUTORS`.
        jobs_at_once: runs at a time (``local`` and ``submitit-local``).
        processes: training processes per node of each run (GPUs; Gloo CPU processes without GPUs).
        nodes: machines per run (``slurm``).
        threads: threads per training process (default: cores / (jobs_at_once x processes) for the
            local executors, Slurm's cpus-per-task on a cluster, unchanged for ``serial``).
        folder: where submitit keeps its job files (``slurm`` / ``submitit-local``).
        gpus_per_node: GPUs requested per node (default: ``processes`` on Slurm, where the submitting
            machine may have none; under ``submitit-local`` ``processes`` if this machine has CUDA, else 0).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}.")
    if jobs_at_once < 1 or processes < 1 or nodes < 1:
        raise ConfigError("--jobs, --num-gpus and --nodes must be at least 1.")
    if nodes > 1 and executor != "slurm":
        raise ConfigError(f"--nodes {nodes} needs --executor slurm (several machines per run).")
    status, todo = {}, []
    for job in jobs:
        state = job.state()
        if state == "done":
            status[job.label] = "skipped"
            echo(f"sweep: {job.label}: complete in {job.out_dir}, skipped.")
        else:
            todo.append(job)
            echo(f"sweep: {job.label}: {'resuming' if state == 'resume' else 'starting'} in {job.out_dir}.")
    if not todo:
        return status
    if executor in ("local", "submitit-local") and threads is None:
        threads = max(1, _cores() // (jobs_at_once * processes))
    if executor in ("serial", "local"):
        lock = threading.Lock()

        def one(job):
            t0 = time.time()
            rc = _run_local(job, processes, threads, echo)
            result = "done" if rc == 0 else f"failed: exit code {rc}, see {os.path.join(job.out_dir, 'sweep.log')}"
            with lock:
                status[job.label] = result
                echo(f"sweep: {job.label}: {result} ({time.time() - t0:.0f} s).")

        with concurrent.futures.ThreadPoolExecutor(max_workers=1 if executor == "serial" else jobs_at_once) as pool:
            list(pool.map(one, todo))
        return status
    gpus = gpus_per_node if gpus_per_node is not None else (
        processes if executor == "slurm" or _cuda_count() else 0)
    ex = _submitit_executor(executor, folder, nodes, processes, gpus, submitit_opts or {"timeout_min": 60 * 24,
                                                                                     "cpus_per_task": 1})
    waves = [todo] if executor == "slurm" else [todo[i:i + jobs_at_once] for i in range(0, len(todo), jobs_at_once)]
    for wave in waves:
        submitted = []
        for job in wave:
            os.makedirs(job.out_dir, exist_ok=True)
            submitted.append((job, ex.submit(TrainTask(job, threads))))
            echo(f"sweep: {job.label}: submitted as job {submitted[-1][1].job_id}.")
        for job, sj in submitted:
            try:
                sj.results()
                status[job.label] = "done"
            except Exception as e:  # noqa: BLE001 - a failed job is reported, the others go on
                last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                status[job.label] = f"failed: {last} (logs: {sj.paths.stdout.parent})"
            echo(f"sweep: {job.label}: {status[job.label]}.")
    return status


def _cuda_count():
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def short_names(jobs):
    """Display names for the report: the shortest trailing part of each config name that is unique, + /seed<k>."""
    names = sorted({j.name for j in jobs})
    short = {}
    for n in names:
        parts = n.split("/")
        for k in range(1, len(parts) + 1):
            tail = "/".join(parts[-k:])
            if sum(1 for m in names if m == tail or m.endswith("/" + tail)) == 1:
                short[n] = tail
                break
        else:
            short[n] = n
    return {j.out_dir: f"{short[j.name]}/seed{j.seed}" for j in jobs}
