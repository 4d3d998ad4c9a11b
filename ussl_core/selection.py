"""Selection of the teacher's good masks (module C of the paper) and human decisions.

Generation 1 scores a soft mask by the mean of its non-zero pixels (computed when the mask
is stored). Selection keeps the top p percent by score, over the whole project or per
video, or every mask above a score threshold. Human decisions override the score: approved
masks are always kept, rejected ones never.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ussl_core.atomic import atomic_path
from ussl_core.errors import SettingsError, UsslError, describe_os_error
from ussl_core.purity import n_kept, rank_best_first
from ussl_core.settings import check, option
from ussl_core.store import Mask, Project

DECISION_COLUMNS = ["video", "frame", "producer", "decision", "time", "reason"]


DEFAULT_TOP_PERCENT = 20.0
TOP_PERCENT_RANGE = {"low": 0, "high": 100, "low_open": True}
# Scores (a teacher's, EvalSeg-Net's) lie in [0, 1]: a threshold outside [0, 1) keeps all masks
# or none, which is never what was meant.
THRESHOLD_RANGE = {"low": 0, "high": 1, "high_open": True}


@dataclass(frozen=True)
class SelectionSettings:
    # The defaults are the recipe that won on the development data (docs/recipe.md): the top 20 %
    # of each video, at most 20 masks of one video. The paper keeps the top 10 % over all masks.
    top_percent: float | None = option(None, "keep the best P percent of the masks (the default "
                                             f"rule: {DEFAULT_TOP_PERCENT:g} %)", **TOP_PERCENT_RANGE)
    threshold: float | None = option(None, "or every mask whose score is above this",
                                     **THRESHOLD_RANGE)
    per_video: bool = option(True, "the top percent of each video's masks on its own")
    # With a global top percent, the places a long video would take go to the next best masks
    # of other videos.
    max_per_video: int | None = option(20, "at most this many masks of one video, the best first "
                                           "(none: no cap)", low=1)

    def __post_init__(self) -> None:
        settle_keep_rule(self)


@dataclass(frozen=True)
class SelectionResult:
    selection_id: int
    n_selected: int
    n_by_score: int
    n_approved_added: int
    n_rejected_removed: int


def settle_keep_rule(rule) -> None:
    """The checks of a keep rule (SelectionSettings, GenerationSettings): one of top percent and
    threshold (the default top percent when neither is given), each in its range."""
    if rule.top_percent is None and rule.threshold is None:
        object.__setattr__(rule, "top_percent", DEFAULT_TOP_PERCENT)
    elif rule.top_percent is not None and rule.threshold is not None:
        raise SettingsError("give one of top_percent and threshold, not both")
    check(rule)


def chosen_by_score(masks: list[Mask], settings: SelectionSettings) -> set[int]:
    """Frame ids the score alone keeps."""
    keep = kept_by_score(np.array([m.score for m in masks]), np.array([m.video_id for m in masks]),
                         settings)
    return {masks[i].frame_id for i in np.flatnonzero(keep)}


def kept_by_score(scores: np.ndarray, video_ids: np.ndarray, settings) -> np.ndarray:
    """Which masks (given as scores and their videos) the score alone keeps, as booleans: the top
    percent over all masks or of each video, or those above the threshold; at most
    max_per_video of one video. `settings`: a SelectionSettings or GenerationSettings."""
    scores, video_ids = np.asarray(scores, np.float64), np.asarray(video_ids)
    keep = np.zeros(len(scores), bool)
    groups = ([np.flatnonzero(video_ids == v) for v in np.unique(video_ids)] if settings.per_video
              else [np.arange(len(scores))])
    for group in groups:
        if settings.threshold is not None:   # only masks above it, capped; none refill from below
            group = group[scores[group] > settings.threshold]
            wanted = len(group)
        else:
            wanted = n_kept(settings.top_percent, len(group))
        keep[group[best_capped(scores[group], video_ids[group].tolist(), wanted,
                               settings.max_per_video)]] = True
    return keep


def best_capped(scores: np.ndarray, videos: list[int], wanted: int,
                max_per_video: int | None) -> list[int]:
    """Indices of the `wanted` best scores, at most `max_per_video` of any one video."""
    chosen: list[int] = []
    counts: dict[int, int] = {}
    for i in rank_best_first(scores):
        if len(chosen) >= wanted:
            break
        if max_per_video is not None and counts.get(videos[i], 0) >= max_per_video:
            continue
        counts[videos[i]] = counts.get(videos[i], 0) + 1
        chosen.append(int(i))
    return chosen


def select(project: Project, producer_id: int, settings: SelectionSettings) -> SelectionResult:
    """Compute and store the active selection (what training will use)."""
    masks = project.masks(producer_id)
    by_score = chosen_by_score(masks, settings)
    decisions = project.decisions(producer_id)
    approved = {f for (f, _), d in decisions.items() if d["decision"] == "approve"}
    rejected = {f for (f, _), d in decisions.items() if d["decision"] == "reject"}
    selected = (by_score | approved) - rejected
    if not selected:   # an empty selection would only stop training; keep the active one
        raise SettingsError(f"{project.root}: this rule keeps no mask (of {len(masks)}); the active "
                            "selection is unchanged. Lower the threshold or use a top percent")
    method, value = (("top_percent", settings.top_percent) if settings.threshold is None
                     else ("threshold", settings.threshold))
    selection_id = project.save_selection(
        producer_id, method, float(value), settings.per_video, sorted(selected),
        n_approved_added=len(approved - by_score), n_rejected_removed=len(rejected & by_score))
    return SelectionResult(selection_id, len(selected), len(by_score),
                           len(approved - by_score), len(rejected & by_score))


def export_decisions(project: Project, path: Path) -> int:
    """Write every current decision as CSV (video, frame, producer, decision, time, reason)."""
    names = _frame_names(project)
    producers = {p.id: p.name for p in project.producers()}
    rows = sorted(project.decisions().items(), key=lambda item: item[1]["time"])
    with atomic_path(path, "csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(DECISION_COLUMNS)
        for (frame_id, producer_id), d in rows:
            video, frame = names[frame_id]
            writer.writerow([video, frame, producers[producer_id], d["decision"], d["time"],
                             d["reason"] or ""])
    return len(rows)


def import_decisions(project: Project, path: Path) -> int:
    """Apply decisions from a CSV written by `export_decisions` (or by hand); all or nothing."""
    lookup = {v: k for k, v in _frame_names(project).items()}
    producers = {p.name: p.id for p in project.producers()}
    parsed = []
    try:
        # utf-8-sig: a spreadsheet's export starts with a byte-order mark (newline="": CRLF too).
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in DECISION_COLUMNS[:4] if c not in (reader.fieldnames or [])]
            if missing:
                raise UsslError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                                f"{','.join(DECISION_COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                row = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
                frame_id = lookup.get((row["video"], row["frame"]))
                if frame_id is None:
                    raise UsslError(f"{path}, line {line}: no frame {row['frame']!r} of video "
                                    f"{row['video']!r} in this project")
                if row["producer"] not in producers:
                    raise UsslError(f"{path}, line {line}: unknown producer {row['producer']!r}")
                if row["decision"] not in ("approve", "reject", "clear"):
                    raise UsslError(f"{path}, line {line}: decision must be approve, reject or "
                                    f"clear, not {row['decision']!r}")
                parsed.append((frame_id, producers[row["producer"]], row["decision"],
                               row.get("reason") or None, row.get("time") or None))
    except OSError as exc:
        raise UsslError(describe_os_error(exc)) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsslError(f"{path}: cannot read decisions ({exc})") from None
    project.set_decisions(parsed)
    return len(parsed)


def _frame_names(project: Project) -> dict[int, tuple[str, str]]:
    videos = {v.id: v.name for v in project.videos()}
    return {f.id: (videos[f.video_id], f.name) for f in project.frames()}
