"""Resuming an interrupted ``python train.py`` run in its own run folder.

``ckpt_path`` on the command line of ``train.py`` (:func:`resume_argv`, applied to ``sys.argv`` before Hydra
composes the config and creates the run folder; :func:`resume_overrides` given the log folder):

* ``ckpt_path=last``: the run folder under ``${paths.log_dir}/${task_name}/runs/`` whose
  ``checkpoints/last.ckpt`` was written most recently (with an explicit ``hydra.run.dir=<run>``: that run);
* ``ckpt_path=<run folder>``: that folder's ``checkpoints/last.ckpt``;
* ``ckpt_path=<run>/checkpoints/<file>.ckpt``: that checkpoint, continuing in ``<run>``.

The command line becomes ``<overrides of the original run> <this command line> ckpt_path=<absolute
checkpoint> hydra.run.dir=<run>``: the original overrides (stored in every checkpoint under
``recsys_overrides``, else read from ``<run>/.hydra/overrides.yaml``) recompose the original config, and the
new ones (e.g. ``trainer.max_epochs=300``) win. Lightning then restores the weights, optimiser, loop
counters and the callbacks' states (best checkpoint, early stopping, ``BestMetricTracker``, ``EpochSeed``),
the CSV log is appended to and ``metrics.json`` rewritten at the end. A checkpoint outside a run folder's
``checkpoints/`` is left to Lightning (training continues from it in a new run folder).

Resuming into another folder (an explicit ``hydra.run.dir``, a moved or copied run folder, a checkpoint outside a
run folder): Lightning restores a ``ModelCheckpoint``'s best-k state only when its ``dirpath`` is unchanged.
:func:`carry_best_k` (used by :class:`~recsys.utils.callbacks.PortableModelCheckpoint`) copies the original run's
best-k checkpoints into the new ``checkpoints/`` and restores the state for them; when the best one is gone, model
selection restarts with the new folder's validations (and ``BestMetricTracker`` with it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError
from recsys.io import atomic_copy

log = logging.getLogger(__name__)

LAST = "last.ckpt"
# set once the command line is rewritten: processes started from this one (Lightning's DDP launcher re-runs
# sys.argv, already rewritten) must not rewrite it again
RESOLVED_ENV = "RECSYS_RESUME_RESOLVED"
MULTIRUN_FLAGS = ("-m", "--multirun")


def _key(override: str) -> str:
    """The config key an override sets: ``+a.b=1`` / ``++a.b=1`` / ``~a.b`` / ``a/b=c`` -> ``a.b``."""
    return override.lstrip("~+").split("=", 1)[0].replace("/", ".")


def _is_override(token: str) -> bool:
    return not token.startswith("-") and ("=" in token or token.startswith("~"))


def _find(overrides: Sequence[str], key: str) -> str | None:
    value = None
    for o in overrides:
        if _is_override(o) and _key(o) == key and "=" in o:
            value = o.split("=", 1)[1]
    return value


def merge_overrides(original: Sequence[str], new: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(original kept, new kept)``: the original run's overrides minus those a new one sets again (same key),
    minus ``ckpt_path``; a new deletion ``~k`` drops the original overrides under ``k``, and is itself dropped
    when those added ``k`` (``+k…``: then there is nothing left to delete)."""
    new_keys = {_key(a) for a in new if _is_override(a)} | {"ckpt_path"}
    kept_new = []
    dropped: set[str] = set()
    for a in new:
        if _is_override(a) and _key(a) == "ckpt_path":
            continue
        if a.startswith("~"):
            k = _key(a)
            under = [o for o in original if _key(o) == k or _key(o).startswith(f"{k}.")]
            dropped.update(under)
            if under and all(o.startswith("+") for o in under):
                continue
        kept_new.append(a)
    kept_original = [o for o in original if o not in dropped and _key(o) not in new_keys]
    return kept_original, kept_new


def run_folder_of(ckpt: Path) -> Path | None:
    """``<run>`` for ``<run>/checkpoints/<file>`` inside a recsys run folder (it has ``.hydra/``), else None."""
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and ((run / ".hydra").is_dir() or (run / "metrics.json").is_file()):
        return run
    return None


def latest_run(runs_dir: Path) -> Path:
    """The folder under ``runs_dir`` whose ``checkpoints/last.ckpt`` was written last."""
    candidates = sorted(runs_dir.glob(f"*/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime_ns)
    if not candidates:
        raise ConfigError(f"ckpt_path=last: no run under {runs_dir} has checkpoints/{LAST} (nothing to resume); "
                          "give ckpt_path=<run folder or checkpoint>")
    return candidates[-1].parent.parent


def fit_checkpoint(ckpt_path: str | os.PathLike | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from: ``last`` -> ``<output_dir>/checkpoints/last.ckpt``; a run
    folder -> its ``checkpoints/last.ckpt``; a file -> itself. A missing one is a ``ConfigError``."""
    if ckpt_path is None or str(ckpt_path) in ("", "null", "None"):
        return None
    p = Path(str(ckpt_path)).expanduser()
    if str(ckpt_path) == "last":
        p = Path(output_dir) / "checkpoints" / LAST
        if not p.is_file():
            raise ConfigError(f"ckpt_path=last: {p} does not exist (nothing to resume in this run folder)")
        return str(p)
    if p.is_dir():
        p = p / "checkpoints" / LAST if (p / "checkpoints").is_dir() else p / LAST
    if not p.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint (a run folder must have "
                          f"checkpoints/{LAST})")
    return str(p)


def stored_overrides(ckpt: Path, run: Path) -> list[str]:
    """The command-line overrides of the run that wrote ``ckpt``: ``recsys_overrides`` in the checkpoint,
    else ``<run>/.hydra/overrides.yaml``, else none."""
    import torch

    try:
        payload = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise ConfigError(f"ckpt_path={str(ckpt)!r}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    stored = payload.get("recsys_overrides") if isinstance(payload, dict) else None
    if stored is not None:
        return [str(o) for o in stored]
    path = run / ".hydra" / "overrides.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(path)]
    log.warning("%s has no stored overrides and %s is missing: resuming with this command line's config", ckpt, path)
    return []


def _find_file(stored: Path, relative: Path, folders: Sequence[Path]) -> Path | None:
    """``stored`` if it is a file, else ``<folder>/<relative>`` of the first of ``folders`` that has it."""
    for candidate in (stored, *(folder / relative for folder in folders)):
        if candidate.is_file():
            return candidate
    return None


def carry_best_k(state: Mapping[str, Any], dirpath: str | os.PathLike, resumed_from: str | os.PathLike | None,
                 mode: str) -> tuple[dict[str, Any], list[str]]:
    """Carry the best-k state of a ``ModelCheckpoint`` saved for the folder ``state["dirpath"]`` over to one that
    writes to ``dirpath``: ``(attributes, missing)``.

    Each checkpoint of ``best_k_models`` is looked up at its stored path, else under the same name next to
    ``resumed_from`` (the checkpoint being resumed: a copied run folder) or in ``dirpath`` (a moved one), and
    copied atomically into ``dirpath`` unless it is there already. ``attributes`` are the ``ModelCheckpoint``
    attributes for the carried files (``best_k_models``, ``best_model_path``, ``best_model_score``,
    ``kth_best_model_path``, ``kth_value``); ``missing`` the stored paths found nowhere. When the best one is
    missing ``attributes`` is empty: model selection restarts (the callback keeps its initial state)."""
    old_dir, new_dir = Path(str(state.get("dirpath") or dirpath)), Path(dirpath)
    folders = ([Path(resumed_from).resolve().parent] if resumed_from else []) + [new_dir]
    carried: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    missing: list[str] = []
    for stored, score in dict(state.get("best_k_models") or {}).items():
        path = Path(stored)
        relative = path.relative_to(old_dir) if old_dir in path.parents else Path(path.name)
        source = _find_file(path, relative, folders)
        if source is None:
            missing.append(stored)
            continue
        target = new_dir / relative
        if not (target.is_file() and target.samefile(source)):
            atomic_copy(source, target)
        renamed[stored] = str(target)
        carried[str(target)] = score
    best = renamed.get(str(state.get("best_model_path") or ""))
    if best is None:
        return {}, missing
    kth = renamed.get(str(state.get("kth_best_model_path") or ""))
    if kth is None:  # the k-th best is gone (or the top k were not full yet): the worst one carried
        kth = (max if mode == "min" else min)(carried, key=lambda p: float(carried[p]))
    return {"best_k_models": carried, "best_model_path": best, "best_model_score": state.get("best_model_score"),
            "kth_best_model_path": kth, "kth_value": carried[kth]}, missing


def _log_dir(overrides: Sequence[str], config_dir: Path, config_name: str) -> tuple[Path, str]:
    """``(paths.log_dir, task_name)`` of the config these overrides compose (deletions ``~k`` left out: they
    may name what only the original run added)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    task = [o for o in overrides if _is_override(o) and not o.startswith("~") and not _key(o).startswith("hydra")
            and _key(o) != "ckpt_path"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir.resolve()), version_base="1.3"):
            cfg = compose(config_name, overrides=task)
            return Path(str(cfg.paths.log_dir)), str(cfg.task_name)
    except Exception as err:  # noqa: BLE001 - a bad override: the user's command line
        raise ConfigError(f"ckpt_path=last: cannot compose the config to find paths.log_dir ({err})") from err
    finally:
        GlobalHydra.instance().clear()


def resume_overrides(argv: Sequence[str], log_dir: str | os.PathLike | None, task_name: str = "train") -> list[str]:
    """``argv`` (``sys.argv``) rewritten to continue a run in its folder (module docstring); unchanged when
    there is nothing to resume. ``ckpt_path=last`` looks under ``<log_dir>/<task_name>/runs``. Raises
    ``ConfigError`` when the checkpoint or run to resume does not exist."""
    argv = list(argv)
    args = argv[1:]
    value = _find(args, "ckpt_path")
    if os.environ.get(RESOLVED_ENV) or value is None or value in ("", "null", "None"):
        return argv
    if any(a in MULTIRUN_FLAGS for a in args):
        if value == "last":
            raise ConfigError("ckpt_path=last resumes one run; in a multirun give each job's checkpoint path")
        return argv
    explicit = _find(args, "hydra.run.dir")
    if value == "last":
        if explicit is None and log_dir is None:
            raise ConfigError("ckpt_path=last: no paths.log_dir to look for runs in; give ckpt_path=<run folder>")
        run = Path(explicit) if explicit else latest_run(Path(log_dir) / task_name / "runs")
        ckpt = run / "checkpoints" / LAST
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path=last: {ckpt} does not exist (nothing to resume in hydra.run.dir={run})")
    else:
        p = Path(value).expanduser()
        if p.is_dir():
            ckpt = p / "checkpoints" / LAST
            if not ckpt.is_file():
                raise ConfigError(f"ckpt_path={value!r}: a folder without checkpoints/{LAST} (nothing to resume)")
            run = p
        elif p.is_file():
            found = run_folder_of(p.resolve())
            if found is None:  # a checkpoint from elsewhere: Lightning continues from it in a new run folder
                return argv
            ckpt, run = p, found
        else:
            raise ConfigError(f"ckpt_path={value!r}: no such checkpoint file or run folder")
    ckpt, run = ckpt.resolve(), run.resolve()
    original, rest = merge_overrides(stored_overrides(ckpt, run), args)
    out = [argv[0], *original, *rest, f"ckpt_path={ckpt}"]
    if not explicit:
        out.append(f"hydra.run.dir={run}")
    os.environ[RESOLVED_ENV] = str(run)
    log.info("Resuming %s from %s", run, ckpt)
    return out


def resume_argv(argv: Sequence[str], config_dir: str | os.PathLike, config_name: str = "train") -> list[str]:
    """:func:`resume_overrides` with ``paths.log_dir`` and ``task_name`` composed from ``config_dir`` (only for
    ``ckpt_path=last`` without an explicit ``hydra.run.dir``)."""
    args = list(argv)[1:]
    log_dir, task_name = None, "train"
    if (not os.environ.get(RESOLVED_ENV) and _find(args, "ckpt_path") == "last" and _find(args, "hydra.run.dir") is None
            and not any(a in MULTIRUN_FLAGS for a in args)):
        log_dir, task_name = _log_dir(args, Path(config_dir), config_name)
    return resume_overrides(argv, log_dir, task_name)


def resume_argv_or_exit(argv: Sequence[str], config_dir: str | os.PathLike, config_name: str = "train") -> list[str]:
    """:func:`resume_argv` for a root script: a ``ConfigError`` is one ``error:`` line and exit code 2."""
    import sys

    try:
        return resume_argv(argv, config_dir, config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
