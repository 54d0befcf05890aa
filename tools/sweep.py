#!/usr/bin/env python
"""Run configs x seeds (detection and classification alike), then write the seed-aware report.

    python tools/sweep.py --configs configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml \\
        'configs/shapes/distill/*.yaml' --seeds 0 1 2 --output-dir output/sweep KD.TEACHER.WEIGHTS t.pth
    python tools/sweep.py --configs coco2017_val:R101-R18:student coco2017_val:R101-R18:DKD --seeds 0 1 2 \\
        --output-dir output/coco-seeds --executor slurm --nodes 1 --num-gpus 4 --partition gpu
    python tools/sweep.py ... --executor local --jobs 2      # two runs at a time on this machine
    python tools/sweep.py ... --dry-run                     # list the runs and their commands only
    python tools/sweep.py --configs configs/shapes/distill/dkd.yaml --seeds 0 1 --output-dir output/beta \
        KD.LOSSES.dkd.params.beta 0.5 KD.LOSSES.dkd.weight 2.0   # one loss entry changed, by its tag

Each run is the ordinary tools/train_net.py / tools/train_cls.py run with SEED k and OUTPUT_DIR
<output-dir>/<config>/seed<k>; finished runs are skipped and unfinished ones resumed (--resume),
so a sweep is simply run again after a crash. The report (tools/report.py's, with mean +- std
over seeds and paired gains with 95% confidence intervals) goes to <output-dir>/report unless
--report says otherwise. The logic lives in :mod:`kd_det.launch.sweep`.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, metavar="CONFIG",
                   help="config files or globs, or paper-table rows dataset:teacher-student:method "
                        "(e.g. coco2017_val:R101-R18:DKD)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    p.add_argument("--output-dir", required=True, help="runs go to <output-dir>/<config>/seed<k>")
    p.add_argument("--executor", default="serial", choices=["serial", "local", "slurm", "submitit-local"],
                   help="serial (default): one run after another; local: --jobs runs at a time; slurm: one "
                        "submitit job per run; submitit-local: the Slurm job function on this machine")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (local, submitit-local)")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="training processes per machine of each run (GPUs; CPU processes without GPUs)")
    p.add_argument("--nodes", type=int, default=1, help="machines per run (slurm)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per training process (default: cores / (jobs x processes) for local executors)")
    p.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs to request per node (slurm default: --num-gpus; 0 on a CPU-only cluster)")
    p.add_argument("--partition", default="", help="Slurm partition")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit of one job (slurm, submitit-local)")
    p.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per training process (slurm)")
    p.add_argument("--mem-gb", type=int, default=0, help="memory per node (slurm; 0 = the partition's default)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, e.g. --slurm-arg account=myproj (repeatable)")
    p.add_argument("--report", default=None, help="report folder (default: <output-dir>/report)")
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    p.add_argument("--no-plots", action="store_true", help="write the report without its PNG plots")
    p.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands; run nothing")
    p.add_argument("--debug", action="store_true", help="show the full traceback of input errors")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    for flag in ("--dry-run", "--no-report", "--no-plots", "--debug"):  # also accepted after the overrides
        while flag in args.opts:
            args.opts.remove(flag)
            setattr(args, flag[2:].replace("-", "_"), True)
    return args


def main(argv=None):
    import kd_det  # noqa: F401  (kd_det.compat before Detectron2)
    from kd_det.errors import UserError
    from kd_det.evaluation.report import build_report
    from kd_det.launch.sweep import plan, run_sweep, short_names

    a = parse_args(argv)
    try:
        slurm_args = []
        for item in a.slurm_arg:
            if "=" not in item:
                raise UserError(f"--slurm-arg {item!r} is not KEY=VALUE.")
            slurm_args.append(tuple(item.split("=", 1)))
        jobs = plan(a.configs, a.seeds, a.output_dir, a.opts)
        if a.dry_run:
            for job in jobs:
                print(f"{job.label} [{job.task}, {job.state()}]: {' '.join(job.command(a.num_gpus))}")
            return 0
        status = run_sweep(jobs, a.executor, jobs_at_once=a.jobs, processes=a.num_gpus, nodes=a.nodes,
                           threads=a.threads, folder=os.path.join(a.output_dir, ".submitit"),
                           gpus_per_node=a.gpus_per_node,
                           submitit_opts={"timeout_min": a.timeout_min, "cpus_per_task": a.cpus_per_task,
                                          "mem_gb": a.mem_gb, "partition": a.partition, "slurm_args": slurm_args})
    except UserError as e:
        if a.debug:
            raise
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    print(f"sweep.py: {len(jobs)} run(s): {sum(v == 'skipped' for v in status.values())} already complete, "
          f"{sum(v == 'done' for v in status.values())} run now, {len(failed)} failed.")
    if not a.no_report:
        out = a.report or os.path.join(a.output_dir, "report")
        names = short_names(jobs)
        result = build_report([j.out_dir for j in jobs], out, names=names, title=f"Sweep {a.output_dir}",
                              plots=not a.no_plots)
        for line in result["problems"]:
            print(f"sweep.py: warning: {line}", file=sys.stderr)
        print(f"sweep.py: report in {os.path.join(out, 'report.md')} (summary.csv: one line per config, "
              "seeds pooled).")
    for label, why in failed.items():
        print(f"sweep.py: {label}: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
