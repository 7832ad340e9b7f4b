"""A study's files in `<log_dir>/<study>/`, each written atomically (never half a file):

  trials.csv  one row per trial: state, value, parameters and every user attr
  best.yaml   the best trial's complete resolved config: `forecast fit --config best.yaml` retrains it
  summary.md  counts, the best trials, failures by reason, parameter importances
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from forecast.core.files import atomic_path, write_text_atomic
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.hpo.storage import describe
from forecast.training.runs import epoch_number

if TYPE_CHECKING:
    from forecast.hpo.plan import StudyPlan

# Failures that are results (the configuration does not fit, or breaks): they count toward N.
# A trial whose process died ("interrupted") or that a user aborted counts as not run.
COUNTED_FAILURES = ("oom", "error")
MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA on fewer complete trials says nothing
BEST_SHOWN = 5


def is_finished(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward `--trials N`: COMPLETE, PRUNED, or FAIL as a result."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("reason") in COUNTED_FAILURES


def counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Trials by outcome: complete, pruned, failed (counted), lost (not counted), running, waiting."""
    c = Counter()
    for t in trials:
        if t.state == TrialState.FAIL:
            c["failed" if is_finished(t) else "lost"] += 1
        else:
            c[t.state.name.lower()] += 1
    return {k: c[k] for k in ("complete", "pruned", "failed", "lost", "running", "waiting")}


def n_finished(trials: Sequence[FrozenTrial]) -> int:
    return sum(is_finished(t) for t in trials)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None before there is one."""
    try:
        return study.best_trial
    except ValueError:
        return None


@dataclass(frozen=True)
class StudyInfo:
    """What the summary says about the study besides its trials."""

    name: str
    folder: Path
    storage: str
    budget: str
    target: int
    n_archs: int
    prior: dict[str, float] | None = None  # the class prior's val scores (positive_rate, loss, ...)


def write_outputs(study: optuna.Study, plan: StudyPlan) -> None:
    """Every output of a planned study (`write_all`), as its options ask."""
    info = StudyInfo(plan.name, plan.folder, describe(plan.url), plan.options.budget, plan.options.trials,
                     len(plan.space.tree.archs), plan.prior)
    write_all(study, info, keep_checkpoints=plan.options.keep_checkpoints)


def write_all(study: optuna.Study, info: StudyInfo, keep_checkpoints: bool = False) -> None:
    """Rewrite trials.csv, best.yaml and summary.md; drop checkpoints of all but the best trial."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    write_trials_csv(study, info.folder / "trials.csv")
    if best is not None:
        write_best_yaml(best, info.folder)
    write_text_atomic(info.folder / "summary.md", summary(study, trials, best, info))
    if not keep_checkpoints:
        prune_checkpoints(trials, best)


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    frame = study.trials_dataframe(multi_index=False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_best_yaml(best: FrozenTrial, folder: Path) -> Path | None:
    """best.yaml from the best trial's saved config, logging its replay to `<folder>/replay`.

    Returns:
        The path written, or None when the trial's config is not on this machine (a trial of
        another worker): its `replay` user attr still holds the command.
    """
    source = Path(str(best.user_attrs.get("log_dir", ""))) / "config.yaml"
    if not source.is_file():
        return None
    config = yaml.safe_load(source.read_text())
    logger = (config.get("trainer") or {}).get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].update(save_dir=str(folder), name="replay", version=None)
    if isinstance(config.get("checkpoint"), dict):  # a replay is a plain fit: resumable checkpoints
        config["checkpoint"].update(save_weights_only=False, save_last=True)
    path = folder / "best.yaml"
    header = (f"# Best trial {best.number} of study {folder.name}: {MONITOR} = {best.value:.6g} "
              f"({best.user_attrs.get('arch_id')}, {best.user_attrs.get('params'):,} parameters)\n"
              f"# Retrain it:  forecast fit --config {path}\n")
    write_text_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def prune_checkpoints(trials: Sequence[FrozenTrial], best: FrozenTrial | None) -> None:
    """Delete checkpoint files of finished trials other than the best (a 2B one is 8 GB: weights only)."""
    for t in trials:
        if t.state.is_finished() and (best is None or t.number != best.number):
            folder = Path(str(t.user_attrs.get("log_dir", ""))) / "checkpoints"
            for ckpt in folder.glob("*.ckpt") if folder.is_dir() else ():
                ckpt.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- summary.md


def summary(study: optuna.Study, trials: Sequence[FrozenTrial], best: FrozenTrial | None,
            info: StudyInfo) -> str:
    """The study in Markdown: counts, best trials, failures, importances."""
    c = counts(trials)
    lines = [
        f"# Study `{info.name}`", "",
        f"- budget {info.budget} ({info.n_archs} grid architectures); objective: best `{MONITOR}` "
        f"over a trial's epochs ({study.direction.name.lower()})",
        f"- {n_finished(trials)}/{info.target} finished: " + ", ".join(f"{n} {k}" for k, n in c.items() if n),
        f"- storage: `{info.storage}`; logs: `tensorboard --logdir {info.folder}`", "",
    ]
    if best is not None:
        lines += [f"Best: trial {best.number}, {MONITOR} = {best.value:.6g}. "
                  f"Retrain: `forecast fit --config {info.folder / 'best.yaml'}`", ""]
    lines += _prior_line(best, info.prior) + _compile_line(trials)
    lines += _best_table(trials) + _failures(trials) + _importances(study, trials)
    return "\n".join(lines) + "\n"


def _prior_line(best: FrozenTrial | None, prior: dict[str, float] | None) -> list[str]:
    """How the best trial compares with always predicting the training positive rate."""
    metric = MONITOR.split("/")[-1]
    if not prior or metric not in prior:
        return []
    line = (f"Class prior (always the training positive rate, {prior['positive_rate']:.1%}): "
            f"{MONITOR} = {prior[metric]:.6g}.")
    if best is not None:
        gap = best.value - prior[metric]
        better = gap < 0 if MONITOR_MODE == "min" else gap > 0
        line += f" The best trial is {abs(gap):.4g} {'better' if better else 'WORSE'}."
    return [line, ""]


def _compile_line(trials: Sequence[FrozenTrial]) -> list[str]:
    """How many trials that asked for --model.compile ran compiled (their speed is the compiled program's)."""
    asked = [t for t in trials if t.user_attrs.get("compile") not in (None, False)]
    if not asked:
        return []
    ran = [t for t in asked if t.user_attrs.get("compiled") is True]
    eager = [str(t.number) for t in asked if t.user_attrs.get("compiled") is False]
    line = f"compile ({asked[0].user_attrs.get('compile')}): {len(ran)} of {len(asked)} trials ran compiled"
    return [line + (f"; ran eager: trials {', '.join(eager)}" if eager else "") + ".", ""]


def _best_table(trials: Sequence[FrozenTrial]) -> list[str]:
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value,
                  reverse=MONITOR_MODE == "max")
    if not done:
        return ["No complete trial yet.", ""]
    names = sorted({k for t in done for k in t.params if "@" not in k and k != "d_model"})
    head = ["trial", MONITOR, "arch", "params", *names, "epochs", "best epoch (of epochs)", "wall s"]
    rows = [
        [str(t.number), f"{t.value:.6g}", str(t.user_attrs.get("arch_id")), f"{t.user_attrs.get('params', 0):,}",
         *[_fmt(t.params.get(n)) for n in names], str(t.user_attrs.get("epochs_run")),
         epoch_number(t.user_attrs.get("best_epoch")), f"{t.user_attrs.get('wall_s', 0):.0f}"]
        for t in done[:BEST_SHOWN]
    ]
    return [f"## Best {len(rows)} complete trials", "", _md_row(head), _md_row(["---"] * len(head)),
            *map(_md_row, rows), ""]


def _failures(trials: Sequence[FrozenTrial]) -> list[str]:
    bad = [t for t in trials if t.state in (TrialState.FAIL, TrialState.PRUNED)
           and t.user_attrs.get("reason") not in (None, "pruned")]
    if not bad:
        return []
    by_reason = Counter(str(t.user_attrs.get("reason")) for t in bad)
    lines = ["## Failed, diverged and lost trials", "",
             ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common()), ""]
    lines += [f"- trial {t.number} ({t.user_attrs.get('arch_id')}): {t.user_attrs.get('reason')} "
              f"{t.user_attrs.get('message', '')}".rstrip() for t in bad[-10:]]
    return lines + [""]


def _importances(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[str]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return [f"Parameter importances appear from {MIN_TRIALS_FOR_IMPORTANCE} complete trials on.", ""]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as err:  # e.g. every trial drew the same value
        return [f"Parameter importances unavailable: {err}", ""]
    lines = ["## Parameter importances (fANOVA over complete trials)", "", "| parameter | importance |",
             "| --- | --- |"]
    return lines + [f"| {name} | {value:.3f} |" for name, value in found.items()] + [""]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
