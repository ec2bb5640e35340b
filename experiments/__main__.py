"""python -m experiments list | run [NAME] [--epochs N] [--device cpu|cuda] [--data-dir D] [--out DIR]
[--seed S] [--limit N] [--smoke] [--synthetic] [--resume] [--distributed]
| results [--out DIR] [--export DIR] [--write FILE] | fidelity [--write FILE]

``run`` with no NAME runs the default experiment, the MNIST CNN.
"""
import argparse
import sys


def main(argv=None):
    from experiments import registry
    p = argparse.ArgumentParser(prog="python -m experiments", description="minidl's registry of experiments")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered experiments and their published figures")
    r = sub.add_parser("run", help="run one experiment (default: %s)" % registry.DEFAULT)
    r.add_argument("name", nargs="?", default=registry.DEFAULT)
    r.add_argument("--epochs", type=int, default=None, help="override the configured number of epochs")
    r.add_argument("--device", default="cpu", help="cpu or cuda")
    r.add_argument("--data-dir", default=None, help="dataset root (default $MINIDL_DATA, else ~/.cache/minidl)")
    r.add_argument("--out", default="runs", help="output folder; the run goes to OUT/NAME/")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--limit", type=int, default=None, help="train on the first N samples only (smoke runs)")
    r.add_argument("--smoke", action="store_true",
                   help="smoke run: 1 epoch on %d samples, with the experiment's reduced widths if it has any" % 128)
    r.add_argument("--synthetic", action="store_true", help="small synthetic data of the right shape")
    r.add_argument("--workers", type=int, default=0, help="DataLoader threads")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--resume", action="store_true", help="continue from OUT/NAME/last.ckpt")
    r.add_argument("--distributed", action="store_true",
                   help="one rank of a data-parallel job: start with `mpiexec -n N python -m experiments run NAME "
                        "--distributed` (MPI; NCCL with --device cuda); the configured batch is split over the ranks")
    r.add_argument("--no-download", action="store_true",
                   help="never fetch missing data from the official servers (by default it is downloaded)")
    s = sub.add_parser("results", help="print the README Results table from OUT/*/metrics.json")
    s.add_argument("--out", default="runs")
    s.add_argument("--write", default=None, help="also write the table to this file")
    s.add_argument("--data-dir", default=None, help="dataset root, to tell whether CIFAR-100 is present")
    s.add_argument("--export", default=None, metavar="DIR",
                   help="first copy OUT's full-length runs to DIR without checkpoints, then tabulate DIR")
    f = sub.add_parser("fidelity", help="print results/FIDELITY.md: each experiment against its report")
    f.add_argument("--write", default=None, help="also write it to this file")
    args = p.parse_args(argv)

    if args.cmd == "list":
        for name, e in registry.EXPERIMENTS.items():
            pub = e.published.get("text", "-") if e.published else "-"
            mark = " (default)" if name == registry.DEFAULT else ""
            print(f"{name:30s} {e.dataset:14s} {e.epochs:4d} ep  batch {e.batch_size:4d}  published: {pub}{mark}")
        return 0
    if args.cmd == "fidelity":
        from experiments.fidelity import fidelity_table
        text = fidelity_table()
        print(text, end="")
        if args.write:
            with open(args.write, "w") as fh:
                fh.write(text)
        return 0
    if args.cmd == "results":
        from experiments.results import export_runs, results_table
        if args.export:
            export_runs(args.out, args.export)
        table = results_table(args.export or args.out, args.data_dir)
        print(table)
        if args.write:
            with open(args.write, "w") as f:
                f.write(table + "\n")
        return 0
    from experiments.runner import RunError, run
    try:
        registry.get(args.name)
    except KeyError as e:
        p.error(e.args[0])
    cmd = "python -m experiments " + " ".join(sys.argv[1:] if argv is None else argv)
    from minidl.data import DatasetNotFoundError, DownloadError
    try:
        res = run(args.name, epochs=args.epochs, device=args.device, data_dir=args.data_dir, out=args.out,
                  seed=args.seed, limit=args.limit, source="synthetic" if args.synthetic else "real", smoke=args.smoke,
                  progress=not args.quiet, command=cmd, num_workers=args.workers, resume=args.resume,
                  download=not args.no_download, distributed=args.distributed)
    except RunError as e:
        p.exit(2, f"error: {e}\n")
    except (DatasetNotFoundError, DownloadError) as e:
        if args.distributed:  # an exit on one rank would leave the others waiting: the job aborts, naming the rank
            raise
        if isinstance(e, DatasetNotFoundError):  # only with --no-download: say it in the CLI's words
            alternative = f" (or {e.alternative})" if e.alternative else ""
            p.exit(2, f"error: {e.dataset} not found: missing {', '.join(e.missing)} in {e.folder}{alternative}.\n"
                      f"Run without --no-download to fetch it from the official servers, put the official files "
                      f"there, or point --data-dir (or MINIDL_DATA) at the folder that holds them.\n"
                      f"(or try a smoke run on synthetic data: python -m experiments run {args.name} "
                      "--smoke --synthetic)\n")
        p.exit(2, f"error: {e}\n(or try a smoke run on synthetic data: python -m experiments run {args.name} "
                  "--smoke --synthetic)\n")
    if args.distributed and res.get("rank", 0) != 0:
        return 0
    pub = res.get("published") or {}
    print(f"{args.name}: test accuracy {res['test_acc']}%  (best val {res['best_val_acc']}% at epoch "
          f"{res['best_epoch']}; published: {pub.get('text', 'none')}); wrote {args.out}/{res['experiment']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
