"""The `ussl` command: every step of the method, headless, with progress bars.

Errors a user can cause print one line (`ussl: error: <file>: <cause>`) and exit 2; a
cancelled step (Ctrl-C) keeps what it completed and exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ussl_core import __version__
from ussl_core.errors import SettingsError, UsslError, describe_catalog_error, describe_os_error
from ussl_core.progress import Cancelled, LineProgress, Progress
from ussl_core.settings import field_help
from ussl_core.store.catalog import CatalogError
from ussl_core.store.project import CATALOG_NAME

EXIT_ERROR = 2
EXIT_CANCELLED = 130
EXIT_BROKEN_PIPE = 141   # as a Unix tool killed by SIGPIPE


# ----------------------------------------------------------------------------- helpers
_UNITS = {"teacher": "frame", "export": "mask", "add": "source"}


def drive(events: Iterator[Progress], log: Path | None = None, quiet: bool = False) -> Progress | None:
    """Run a step's progress generator with a tqdm bar on a terminal, or (a batch job's output
    file: no terminal) a plain line now and then; append its messages to the job log."""
    from tqdm import tqdm

    batch_log = not sys.stderr.isatty()
    lines = LineProgress(sys.stderr, float(os.environ.get("USSL_PROGRESS_SECONDS", "30")))
    bar = None
    last = None
    stage = None
    log_file = open(log, "a", encoding="utf-8") if log else None
    try:
        for event in events:
            last = event
            if log_file:
                log_file.write(f"{event.done}/{event.total} {event.message}\n")
                log_file.flush()
            if quiet:
                continue
            if batch_log:
                lines.show(event, _UNITS.get(event.stage, "step"))
                continue
            if bar is not None and event.stage != stage:   # a new stage: a bar of its own
                bar.close()
                bar = None
            if bar is None:
                stage = event.stage
                bar = tqdm(total=event.total, desc=event.stage or "working",
                           unit=_UNITS.get(event.stage, "step"), dynamic_ncols=True,
                           file=sys.stderr, mininterval=0.2)
            bar.total = event.total
            bar.set_postfix_str(event.message[-60:], refresh=False)
            bar.update(event.done - bar.n)  # redraws at most every mininterval
    finally:
        if bar is not None:
            bar.close()
        if batch_log and not quiet:
            lines.finish()
        if log_file:
            log_file.close()
    return last


def _open(path: str, write: bool, holder: str):
    from ussl_core.store import Project

    return Project.open(path, write=write, holder=holder)


def _holder(args: argparse.Namespace) -> str:
    return f"ussl {args.command}"


def _producer(project, name: str | None):
    return project.producer(name) if name else project.default_producer()


# ----------------------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> int:
    from ussl_core.store import Project

    Project.create(args.project).close()
    print(f"created project {Path(args.project).resolve()}")
    return 0


def is_chief() -> bool:
    """False only in a worker of a multi-worker training run that is not its chief."""
    from ussl_core.multiworker import worker_role

    role = worker_role()
    return role is None or role.chief


def run_in_project(args: argparse.Namespace, step, quiet: bool = False,
                   finished: list[Progress] | None = None) -> list[Progress]:
    """Run a step (ussl_core.steps) in the project, recorded as a job with its log, with a
    progress bar; returns the last event of each stage, in the order the stages ended, and
    appends each model's last word (saved, or already trained) to `finished`."""
    from ussl_core.steps import run_step, settings_of, step_spec

    settings_of(step)   # bad settings: refused before the project is touched
    finished = finished if finished is not None else []
    last: dict[str, Progress] = {}

    def remember(events):
        for event in events:
            if event.metrics.get("event") == "collapse":   # above the progress bar, as it happens
                print(f"ussl: warning: {event.message}", file=sys.stderr)
            last.pop(event.stage, None)
            last[event.stage] = event
            if event.metrics.get("event") in ("saved", "skipped"):
                finished.append(event)
            yield event

    if step.kind in ("train", "evalseg") and not is_chief():
        # A worker of a multi-worker run that is not the chief: it reads, the chief writes
        # (the models, their cards, the job record).
        with _open(args.project, False, _holder(args)) as project:
            drive(remember(run_step(project, step)), None, quiet)
        return list(last.values())
    with _open(args.project, True, _holder(args)) as project:
        events = remember(run_step(project, step))
        # A step refuses what cannot work (no selection, decisions in the way, ...) before its
        # first event: such a refusal leaves no trace, not even a failed job in the history.
        first = next(events, None)
        with project.job(step.kind, step_spec(step)) as (_, log):
            drive(itertools.chain([first] if first else [], events), log, quiet)
    return list(last.values())


def last_of(events: list[Progress], stage: str) -> Progress | None:
    return next((e for e in reversed(events) if e.stage == stage), None)


def cmd_add(args: argparse.Namespace) -> int:
    from ussl_core.steps import AddStep

    step = AddStep(tuple(args.sources), args.davis, args.images, args.ground_truth, args.max_shot_length)
    run_in_project(args, step, args.quiet)
    with _open(args.project, False, _holder(args)) as project:
        videos = project.videos()
        print(f"{len(videos)} video(s), {sum(v.frame_count for v in videos)} frames in the project")
    return 0


def project_status(project) -> dict:
    """What the project holds and where it stands (also what `ussl status --json` prints)."""
    from ussl_core.store.model_files import trained_cards

    videos = project.videos()
    producers = []
    for p in project.producers():
        producers.append({"name": p.name, "kind": p.kind, "generation": p.generation,
                          "masks": project.mask_count(p.id)})
    decisions = project.decisions()
    selection = project.active_selection()
    running = [j for j in project.jobs() if j["status"] == "running"]
    holder = project.lock_holder()
    return {
        "project": str(project.root),
        "videos": len(videos),
        "videos_with_ground_truth": sum(1 for v in videos if v.gt_source),
        "frames": sum(v.frame_count for v in videos),
        "shots": len(project.shots()),
        "producers": producers,
        "selection": None if selection is None else {
            "producer": next(p.name for p in project.producers() if p.id == selection["producer_id"]),
            "method": selection["method"], "value": selection["value"],
            "per_video": bool(selection["per_video"]), "size": selection["n_selected"],
            "approved_added": selection["n_approved_added"],
            "rejected_removed": selection["n_rejected_removed"]},
        "decisions": {"approve": sum(1 for d in decisions.values() if d["decision"] == "approve"),
                      "reject": sum(1 for d in decisions.values() if d["decision"] == "reject")},
        "models": sorted(c.get("name", c["path"].stem) for c in trained_cards(project)),
        "running_job": (running[0]["kind"] if running and holder else None),
        "lock_holder": holder,
    }


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args.project, False, _holder(args)) as project:
        status = project_status(project)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"project   {status['project']}")
    print(f"videos    {status['videos']} ({status['videos_with_ground_truth']} with ground truth), "
          f"{status['shots']} shots, {status['frames']} frames")
    for p in status["producers"]:
        print(f"masks     {p['name']:<20} {p['masks']:>8}  ({p['kind']}, generation {p['generation']})")
    sel = status["selection"]
    print("selection " + ("none yet" if sel is None else
                          f"{sel['size']} masks of {sel['producer']} ({sel['method']} {sel['value']:g}"
                          f"{', per video' if sel['per_video'] else ''}; +{sel['approved_added']} approved,"
                          f" -{sel['rejected_removed']} rejected)"))
    print(f"decisions {status['decisions']['approve']} approved, {status['decisions']['reject']} rejected")
    print(f"models    {', '.join(status['models']) or 'none yet'}")
    if status["lock_holder"]:
        h = status["lock_holder"]
        print(f"running   {h.get('holder')} (pid {h.get('pid')}, since {h.get('since')})")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from ussl_core.steps import TeacherStep

    try:
        settings = json.loads(args.settings) if args.settings else None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--settings is not valid JSON ({exc})") from None
    if args.discard_decisions and not args.replace:
        raise SettingsError("--discard-decisions goes with --replace")
    step = TeacherStep(args.teacher, settings, args.workers, args.replace, args.discard_decisions,
                       args.cluster)
    events = run_in_project(args, step, args.quiet)
    last = last_of(events, "teacher")
    rate = last.metrics.get("frames_per_s") if last else None
    print(f"{args.teacher}: masks for {last.done if last else 0} of {last.total if last else 0} frames"
          + (f" ({rate:.0f} frames/s this run)" if rate else " (nothing left to do)"))
    measured = last_of(events, "purity")
    if measured and measured.done:
        print(measured.message)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from ussl_core.selection import SelectionSettings
    from ussl_core.steps import SelectStep

    rule = dataclasses.asdict(keep_rule_from_args(SelectionSettings, args))
    print(run_in_project(args, SelectStep(rule, args.producer), quiet=True)[-1].message)
    return 0


def cmd_purity(args: argparse.Namespace) -> int:
    from ussl_core.purity import plot_curve, purity_curve, write_per_video_csv

    with _open(args.project, False, _holder(args)) as project:
        producer = _producer(project, args.producer)
        curve = purity_curve(project, producer.id)
        if args.plot:
            plot_curve(curve, Path(args.plot), f"Purity of {producer.name} ({curve.n_masks} masks)")
        if args.per_video:
            write_per_video_csv(project, producer.id, Path(args.per_video))
    if args.json:
        print(json.dumps({"producer": producer.name, **curve.to_json()}))
        return 0
    print(f"purity of {producer.name} from {curve.source.replace('_', ' ')} ({curve.n_masks} masks)")
    for p in (1, 2, 5, 10, 20, 30, 50, 75, 100):
        i = p - 1
        if curve.source == "ground_truth":
            print(f"  top {p:>3}%  kept {curve.n_kept[i]:>6}  mean IoU {curve.mean_iou[i]:.3f}  "
                  f"CorLoc {curve.corloc[i]:.3f}")
        else:
            share = curve.approved_share[i]
            print(f"  top {p:>3}%  kept {curve.n_kept[i]:>6}  audited {curve.n_audited[i]:>5}  "
                  f"approved {'-' if share is None else f'{share:.3f}'}")
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    from ussl_core.selection import export_decisions, import_decisions

    if args.export:
        with _open(args.project, False, _holder(args)) as project:
            n = export_decisions(project, Path(args.export))
        print(f"exported {n} decisions to {args.export}")
    else:
        with _open(args.project, True, _holder(args)) as project:
            n = import_decisions(project, Path(args.import_))
        print(f"imported {n} decisions from {args.import_}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ussl_core.export import export_masks

    with _open(args.project, False, _holder(args)) as project:
        producer = _producer(project, args.producer)
        last = drive(export_masks(project, producer.id, Path(args.masks)), None, args.quiet)
    print(f"exported {last.done if last else 0} masks of {producer.name} to {args.masks}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ussl_core.evaluate import evaluate_folders

    result = evaluate_folders(Path(args.pred), Path(args.gt))
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        print(f"{key:24} {value:.4f}" if isinstance(value, float) else f"{key:24} {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ussl_core.demo import DemoSettings, run_demo
    from ussl_core.ingest import expand_sources

    def specs(paths):
        return expand_sources(paths or [], args.davis)

    settings = DemoSettings.reduced() if args.reduced else DemoSettings()
    if args.archs:
        settings = DemoSettings(**{**settings.__dict__, "archs": tuple(args.archs.split(","))})
    if args.epochs:
        settings = DemoSettings(**{**settings.__dict__, "epochs": args.epochs})
    out = Path(args.out)
    drive(run_demo(out, specs(args.videos) or None, args.workers, settings,
                   specs(args.add) or None), None, args.quiet)
    print((out / "report" / "summary.json").read_text())
    print(f"report: {out / 'report'}   project: {out / 'project'} (open it with `ussl-gui {out / 'project'}`)")
    return 0


def _training_settings(args: argparse.Namespace):
    from ussl_core.training import TrainingSettings

    return settings_from_args(TrainingSettings, args)


def cmd_train(args: argparse.Namespace) -> int:
    from ussl_core.names import STUDENTS
    from ussl_core.steps import TrainStep

    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    unknown = [a for a in archs if a not in STUDENTS]
    if unknown:
        raise SettingsError(f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(STUDENTS)}")
    step = TrainStep(archs, args.preset, dataclasses.asdict(_training_settings(args)), resume=args.resume,
                     replace=args.replace, require_checkpoint=args.resume)
    finished: list[Progress] = []
    run_in_project(args, step, args.quiet, finished)
    for event in finished:
        print(event.message)
    return 0


def cmd_evalseg(args: argparse.Namespace) -> int:
    from ussl_core.steps import EvalSegStep

    step = EvalSegStep(args.preset, dataclasses.asdict(_training_settings(args)), args.resume, args.max_frames,
                       replace=args.replace, require_checkpoint=args.resume)
    events = run_in_project(args, step, args.quiet)
    print(events[-1].message if events else "EvalSeg-Net: nothing to do")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ussl_core.models import ARCHITECTURES, PRESETS, model_info

    presets = [args.preset] if args.preset else list(PRESETS)
    infos = [model_info(arch, preset) for preset in presets for arch in ARCHITECTURES]
    if args.json:
        print(json.dumps([{"name": i.name, "preset": i.preset, "params": i.params,
                           "input_size": i.input_size, "output_size": i.output_size} for i in infos]))
        return 0
    for i in infos:
        print(f"{i.preset:8} {i.name:12} in {i.input_size:>3}  out {i.output_size:>3}  "
              f"{i.params / 1e6:8.2f}M parameters")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from ussl_core.cluster import parse_cluster
    from ussl_core.segment import SegmentSettings, is_model_or_project, segment_paths

    inputs = [Path(p) for p in args.inputs]
    model = Path(args.model) if args.model else None
    # The earlier form `ussl segment MODEL_OR_PROJECT INPUT...` still works.
    if model is None and len(inputs) > 1 and is_model_or_project(inputs[0]):
        model, inputs = inputs[0], inputs[1:]
    settings = SegmentSettings(method=args.ensemble, flip_average=args.flip_average,
                               threshold=args.threshold)
    cluster = parse_cluster(args.cluster) if args.cluster else None
    last = drive(segment_paths(model, inputs, Path(args.out), settings, args.boxes, args.grabcut,
                               cluster=cluster), None, args.quiet)
    print(f"wrote {last.done if last else 0} masks to {args.out}"
          + ("" if model else " (with the models shipped with ussl)"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """0: sound; 1: problems found (listed, one a line); with --repair, repaired (0)."""
    from ussl_core.steps import RepairStep
    from ussl_core.store.integrity import Problem, check_project

    with _open(args.project, False, _holder(args)) as project:
        root = project.root
        problems = [item for item in check_project(project) if isinstance(item, Problem)]
    if args.json:
        print(json.dumps([{"kind": p.kind, "path": str(p.path), "cause": p.cause} for p in problems]))
    for problem in problems if not args.json else []:
        print(problem.line(root))
    if not problems:
        if not args.json:
            print(f"{root}: every shard, model and checkpoint is sound")
        return 0
    if not args.repair:
        if not args.json:
            print(f"{len(problems)} problem(s); `ussl check {args.project} --repair` moves the broken files "
                  "to quarantine/ and recomputes what it can", file=sys.stderr)
        return 1
    events = run_in_project(args, RepairStep(args.workers), args.quiet)
    print(events[-1].message)
    return 0


def cmd_next_generation(args: argparse.Namespace) -> int:
    from ussl_core.generations import GenerationSettings
    from ussl_core.steps import NextGenerationStep

    rule = dataclasses.asdict(keep_rule_from_args(GenerationSettings, args))
    step = NextGenerationStep(tuple(args.add or ()), args.davis, args.images, rule, args.teacher, args.workers,
                              args.cluster)
    events = run_in_project(args, step, args.quiet)
    print(events[-1].message if events else "")
    return 0


# ----------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals in the one-line form of every other error, with where help is
    (argparse's own prints the whole usage first)."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cluster_address(text: str) -> str:
    """An argparse type: a Dask scheduler's address or local[:N], checked (kept as text)."""
    from ussl_core.cluster import parse_cluster

    try:
        parse_cluster(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--cluster {text.strip()}: ")) from None
    return text.strip()


def add_cluster_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--cluster", type=cluster_address, default=os.environ.get("USSL_CLUSTER") or None,
                   metavar="ADDRESS|local[:N]",
                   help=f"run {what} on Dask: a running scheduler (tcp://host:8786) or a LocalCluster "
                        "of N worker processes (default: $USSL_CLUSTER, else this machine's process "
                        "pool; docs/scale-out.md)")


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (workers, frames)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_settings_flags(parser: argparse.ArgumentParser, settings_type, defaults=None) -> None:
    """One flag per field of a settings dataclass (--field-name), its default taken from
    `defaults` (an instance; the dataclass's own defaults if None) and its help from the field."""
    defaults = defaults if defaults is not None else settings_type()
    for item in dataclasses.fields(settings_type):
        default = getattr(defaults, item.name)
        flag = "--" + item.name.replace("_", "-")
        help_ = f"{field_help(item)}; default {default}".strip("; ").replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            choices = item.metadata.get("choices")
            parser.add_argument(flag, type=type(default), default=default, choices=choices,
                                metavar=None if choices else item.name.split("_")[-1].upper(),
                                help=help_)


def add_keep_rule_flags(parser: argparse.ArgumentParser, defaults, what: str) -> None:
    """The flags of a rule that keeps the best-scored masks (SelectionSettings for the teacher's
    masks, GenerationSettings for a generation's candidates), defaults from `defaults`."""
    rule = parser.add_mutually_exclusive_group()
    default_rule = (f"{defaults.top_percent:g} %%" if defaults.threshold is None
                    else f"score above {defaults.threshold:g}")
    rule.add_argument("--top-percent", type=float, metavar="P",
                      help=f"keep the best P percent of the {what} (default {default_rule})")
    rule.add_argument("--threshold", type=float, metavar="T",
                      help=f"or keep the {what} whose score is above T")
    parser.add_argument("--per-video", action=argparse.BooleanOptionalAction, default=defaults.per_video,
                        help=f"the top percent of each video's {what} on its own, or of all together "
                             f"(default: {'each video' if defaults.per_video else 'all together'})")
    parser.add_argument("--max-per-video", type=int, metavar="N", default=defaults.max_per_video or 0,
                        help=f"at most N {what} of one video, the best; with a top percent over all, "
                             f"their places go to other videos; 0: no cap (default {defaults.max_per_video or 0})")


def keep_rule_from_args(settings_type, args: argparse.Namespace):
    """The keep rule that `add_keep_rule_flags` asked for; the dataclass's defaults otherwise."""
    return settings_type(top_percent=args.top_percent, threshold=args.threshold, per_video=args.per_video,
                         max_per_video=args.max_per_video or None)


def settings_from_args(settings_type, args: argparse.Namespace):
    """The settings dataclass from the flags `add_settings_flags` made."""
    return settings_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings_type)})


def _segment_defaults():
    from ussl_core.segment import SegmentSettings

    return SegmentSettings()


def build_parser() -> argparse.ArgumentParser:
    from ussl_core.generations import TEACHERS as GENERATION_TEACHERS   # light: no TensorFlow
    from ussl_core.generations import GenerationSettings
    from ussl_core.names import PRESET_NAMES
    from ussl_core.selection import SelectionSettings
    from ussl_core.teacher import TEACHERS

    parser = OneLineParser(
        prog="ussl", description="Unsupervised learning of foreground segmentation from video "
                                 "(Croitoru, Bogolin & Leordeanu, IJCV 2019).")
    parser.add_argument("--version", action="version", version=f"ussl {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback with an error (for a bug report)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "create an empty project folder")
    p.add_argument("project")

    p = command("add", cmd_add, "add video files, frame folders, image folders, DAVIS roots or "
                                 "folders of footage (their videos and frame folders) to a project")
    p.add_argument("project")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--ground-truth", metavar="DIR",
                   help="ground-truth masks named like the frames (DIR/<frame>.png or DIR/<video>/<frame>.png)")
    p.add_argument("--davis", action="store_true",
                   help="each SOURCE is a DAVIS root: add every shot and its annotations "
                        "(recognised without this flag too)")
    p.add_argument("--images", action="store_true",
                   help="the folders hold unrelated images (unlabeled data), not video frames")
    p.add_argument("--max-shot-length", type=at_least_one, default=300, metavar="N")
    p.add_argument("--quiet", action="store_true")

    p = command("status", cmd_status, "what the project holds and where it stands")
    p.add_argument("project")
    p.add_argument("--json", action="store_true")

    p = command("teacher", cmd_teacher, "compute the teacher's soft masks for every shot")
    p.add_argument("project")
    p.add_argument("--teacher", default="videopca", choices=list(TEACHERS))
    p.add_argument("--workers", type=at_least_one, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: the number of cores)")
    add_cluster_flag(p, "the shots")
    p.add_argument("--settings", metavar="JSON", help='teacher settings, e.g. \'{"n_components": 5}\'')
    p.add_argument("--replace", action="store_true",
                   help="discard this teacher's existing masks (and its selections) and compute them "
                        "again; refused while approve/reject decisions on them exist")
    p.add_argument("--discard-decisions", action="store_true",
                   help="with --replace: also discard the approve/reject decisions on those masks")
    p.add_argument("--quiet", action="store_true")

    p = command("select", cmd_select, "select the best masks for training (decisions override)")
    p.add_argument("project")
    add_keep_rule_flags(p, SelectionSettings(), "masks")
    p.add_argument("--producer", help="whose masks (default: the first teacher)")

    p = command("check", cmd_check, "find missing or corrupt shards, models and checkpoints "
                                    "(exit 1 if any); --repair moves them to quarantine/ and recomputes")
    p.add_argument("project")
    p.add_argument("--repair", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workers", type=at_least_one, default=os.cpu_count() or 1, metavar="N")
    p.add_argument("--quiet", action="store_true")

    p = command("purity", cmd_purity, "purity of the kept masks as selection gets stricter")
    p.add_argument("project")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--per-video", metavar="CSV")
    p.add_argument("--producer")

    p = command("decisions", cmd_decisions, "export or import human approve/reject decisions as CSV")
    p.add_argument("project")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--export", metavar="CSV")
    group.add_argument("--import", dest="import_", metavar="CSV")

    p = command("export", cmd_export, "write masks as 8-bit PNGs at the frames' original size")
    p.add_argument("project")
    p.add_argument("--masks", required=True, metavar="DIR")
    p.add_argument("--producer")
    p.add_argument("--quiet", action="store_true")

    p = command("evaluate", cmd_evaluate, "score soft masks against ground truth (all metrics)")
    p.add_argument("--pred", required=True, metavar="DIR")
    p.add_argument("--gt", required=True, metavar="DIR")
    p.add_argument("--json", action="store_true")
    from ussl_core.evalseg import evalseg_settings
    from ussl_core.training import TrainingSettings

    def training_flags(p: argparse.ArgumentParser, defaults) -> None:
        p.add_argument("--preset", default="compact", choices=PRESET_NAMES)
        add_settings_flags(p, TrainingSettings, defaults)
        runs = p.add_mutually_exclusive_group()
        runs.add_argument("--resume", action="store_true",
                          help="continue an interrupted run from its last epoch (an error if there is none)")
        runs.add_argument("--replace", action="store_true",
                          help="train again over a finished model (refused otherwise) and replace it")
        p.add_argument("--quiet", action="store_true")

    p = command("train", cmd_train, "train students on the active selection, one after another")
    p.add_argument("project")
    p.add_argument("--arch", default="basic_unet", metavar="A,B,...",
                   help="lowres, fconv, basic_unet, dilate_unet, dense_unet (comma-separated)")
    training_flags(p, TrainingSettings())

    p = command("evalseg", cmd_evalseg, "train EvalSeg-Net for the current generation")
    p.add_argument("project")
    p.add_argument("--max-frames", type=at_least_one, default=600, metavar="N",
                   help="frames (each with every student's mask) to learn from")
    training_flags(p, evalseg_settings())

    p = command("next-generation", cmd_next_generation,
                "make the students the teacher of the next generation: candidates, scores, selection")
    p.add_argument("project")
    p.add_argument("--add", nargs="+", metavar="SOURCE", help="new unlabeled videos or folders first")
    p.add_argument("--davis", action="store_true", help="the --add sources are DAVIS roots")
    p.add_argument("--images", action="store_true", help="the --add folders hold unrelated images")
    add_keep_rule_flags(p, GenerationSettings(), "candidates")
    p.add_argument("--teacher", default="students", choices=GENERATION_TEACHERS,
                   help="students: this generation's own (default); builtin: the models shipped "
                        "with ussl become generation 1 first, so nothing needs training")
    p.add_argument("--workers", type=at_least_one, default=os.cpu_count() or 1, metavar="N")
    add_cluster_flag(p, "new frames, the candidates and their scores")
    p.add_argument("--quiet", action="store_true")

    p = command("models", cmd_models, "every architecture with its sizes and parameter count")
    p.add_argument("--preset", choices=PRESET_NAMES)
    p.add_argument("--json", action="store_true")

    segment_defaults = _segment_defaults()
    p = command("segment", cmd_segment, "segment images (or videos): with the models shipped with "
                                        "ussl, or with --model a project's or a .keras file")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", metavar="MODEL_OR_PROJECT",
                   help="a .keras model, a project folder (its latest generation) or a folder of "
                        "models (default: the models shipped with ussl)")
    p.add_argument("--ensemble", default=segment_defaults.method, metavar="multi|mean|multiselect|ARCH",
                   help=f"how the students' masks combine (default {segment_defaults.method})")
    p.add_argument("--flip-average", action=argparse.BooleanOptionalAction,
                   default=segment_defaults.flip_average,
                   help="average each student's masks of the image and its mirror image")
    p.add_argument("--threshold", type=float, default=segment_defaults.threshold, metavar="T",
                   help=f"boxes around the mask above T (default {segment_defaults.threshold})")
    p.add_argument("--boxes", action="store_true", help="also write DIR/boxes.json and DIR/boxes.csv")
    p.add_argument("--grabcut", action="store_true",
                   help="also write each image's cut-out by GrabCut, seeded by its mask (<name>.cutout.png)")
    add_cluster_flag(p, "batches of images and each video")
    p.add_argument("--quiet", action="store_true")

    p = command("demo", cmd_demo, "run the method end to end on the embedded sample (or given videos)")
    p.add_argument("--out", default="ussl-demo", metavar="DIR")
    p.add_argument("--videos", nargs="+", metavar="SOURCE", help="instead of the embedded sample")
    p.add_argument("--add", nargs="+", metavar="SOURCE", help="new unlabeled data for generation 2")
    p.add_argument("--davis", action="store_true", help="the --videos and --add are DAVIS roots")
    p.add_argument("--archs", metavar="A,B,...", help="students to train (default basic_unet,dense_unet,lowres)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--reduced", action="store_true", help="a one-minute configuration (for tests)")
    p.add_argument("--workers", type=at_least_one, default=os.cpu_count() or 1, metavar="N")
    p.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    # FFmpeg and OpenCV print their own lines about a bad file ("moov atom not found") on
    # stderr next to our one-line error; quiet unless the user sets these variables. Set before
    # the parser is built: building it imports OpenCV, which reads them once.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()   # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except UsslError as exc:
        return _fail(str(exc), args)
    except (KeyboardInterrupt, Cancelled):
        print("ussl: cancelled; completed work is kept, run the same command again to continue",
              file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:   # the reader went away (`ussl status p | head -1`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        return _fail(describe_os_error(exc), args)
    except CatalogError as exc:
        project = getattr(args, "project", None)
        return _fail(describe_catalog_error(Path(project) / CATALOG_NAME if project else None, exc), args)


def _fail(message: str, args: argparse.Namespace) -> int:
    """One line on stderr (and, with --debug, the traceback first)."""
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    print(f"ussl: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
