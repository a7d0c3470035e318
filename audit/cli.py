"""Command line: flags → AuditConfig → run_audit → exit code (SPEC §2).

Owns: argument parsing, rich progress bars and messages on stderr, the one-paragraph error
output and the exit codes. The only module that imports typer and rich; it computes nothing.
Only the final summary goes to stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from audit._version import __version__
from audit.config import DEFAULT_SPARSITIES, AuditConfig, load_policy
from audit.errors import EXIT_INPUT, EXIT_INTERNAL, AuditError, UsageError
from audit.pruning.finetune import DEFAULT_FINETUNE_LR
from audit.pruning.methods import method_help
from audit.pruning.recovery import recovery_help
from audit.report.formats import check_formats, report_format_names

app = typer.Typer(
    name="prune-audit",
    help="Audit whether pruning a vision model will increase its bias, then prove it by pruning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflow docstring paragraphs instead of keeping line breaks
)
_FORMAT_HELP = (
    f"Comma list of report formats: {', '.join(report_format_names())} (and any format a "
    "plug-in registered with audit.register_report_format)."
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


class RichProgress:
    """Progress bars on stderr (transient per task, so the terminal stays readable)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Show one bar (or a spinner when total is None) while the block runs."""
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=self.console, transient=True) as bar:
            tid = bar.add_task(description, total=total)
            yield lambda n: bar.advance(tid, n)
        self.console.print(f"[dim]✓ {description}[/dim]")

    def log(self, message: str) -> None:
        """Print a status line on stderr."""
        self.console.print(message)


def _version(value: bool) -> None:
    if value:
        out.print(f"prune-audit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """prune-audit: bias audits for pruned vision models (Iofinova et al., CVPR 2023)."""


def _floats(text: str | None, flag: str, n: int | None = None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r} must be a comma-separated list of numbers.") from None
    if n is not None and len(values) != n or not values:
        raise UsageError(
            f"{flag} {text!r} must have {n or 'at least one'} comma-separated numbers."
        )
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} {text!r} must hold finite numbers (not nan or inf).")
    return values


def _ints(text: str, flag: str) -> tuple[int, ...]:
    values = _floats(text, flag) or ()
    if not all(v == int(v) for v in values):
        raise UsageError(f"{flag} {text!r} must be a comma-separated list of whole numbers.")
    return tuple(int(v) for v in values)


def _policy_overrides(
    target_sparsity: float | None, fail_on: str | None, min_group_size: int | None
) -> dict[str, Any]:
    """The policy keys given as flags, checked here so a bad value is a usage error (exit 2).

    The same values in a policy file are input errors (exit 3, ``config.policy_from_mapping``).
    """
    overrides: dict[str, Any] = {}
    if target_sparsity is not None:
        if not 0.0 < target_sparsity < 1.0:  # also refuses nan
            raise UsageError(
                f"--target-sparsity {target_sparsity} is out of range; it is the fraction of "
                "weights removed, strictly between 0 and 1 (e.g. 0.9 for 90% sparsity)."
            )
        overrides["target_sparsity"] = target_sparsity
    if fail_on is not None:
        if fail_on not in ("validated", "forecast"):
            raise UsageError(
                f"--fail-on {fail_on!r} is not one of validated, forecast (judge the pruned "
                "models' measured changes, or the dense-only forecast)."
            )
        overrides["fail_on"] = fail_on
    if min_group_size is not None:
        if min_group_size < 1:
            raise UsageError(
                f"--min-group-size {min_group_size} must be at least 1 (cells with fewer "
                "samples are shown but left out of gaps)."
            )
        overrides["min_group_size"] = min_group_size
    return overrides


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`Interrupted` while a command runs.

    Every staging folder and pruned checkpoint is removed by the ``finally`` blocks that
    Ctrl-C already runs. The handler is one-shot: a second signal during that cleanup is
    ignored rather than cutting it short.
    """

    def handler(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals cannot be handled here
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    signum = getattr(exc, "signum", signal.SIGINT)
    err.print(
        f"[bold red]interrupted[/bold red] ({signal.Signals(signum).name}); nothing was "
        "written to the report folder."
    )
    return typer.Exit(128 + int(signum))


def _fail(exc: BaseException) -> typer.Exit:
    if isinstance(exc, AuditError):
        # Messages quote file names and cell values, which may contain rich markup brackets.
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        return typer.Exit(exc.exit_code)
    err.print(
        "[bold red]internal error[/bold red] (a bug in prune-audit, not in your inputs; please "
        "report it with the traceback below). No report was written.",
    )
    err.print("".join(traceback.format_exception(exc)), markup=False)
    return typer.Exit(EXIT_INTERNAL)


def _warn(report: dict[str, Any], notices: tuple[str, ...] = ()) -> None:
    """Print the report's warnings on stderr (small groups, skipped images, ...).

    Parameters
    ----------
    report : dict
        The report data; its ``warnings`` list is printed one line each, even with
        ``--quiet``, which silences progress only.
    notices : tuple of str, default=()
        Warnings raised after the reports were written (a failed MLflow logging).
    """
    for message in [*(report.get("warnings") or ()), *notices]:
        err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def _summary(result: Any, console: Console) -> None:
    rep = result.report
    verdict = rep["verdict"]
    mark = "[bold green]PASSED[/bold green]" if verdict["passed"] else "[bold red]FAILED[/bold red]"
    # Headlines and failures quote column names from the data: no markup.
    console.print(f"{mark} {escape(verdict['headline'])}")
    console.print(f"forecast risk: {verdict['forecast']}")
    for failure in rep["gate"]["failures"][:10]:
        console.print(f"  ✗ {escape(failure)}")
    if len(rep["gate"]["failures"]) > 10:
        console.print(f"  … and {len(rep['gate']['failures']) - 10} more (see report.md)")
    for f in result.files:
        console.print(f"wrote {escape(str(f))}")
    if getattr(result, "mlflow_run_id", None):
        console.print(f"logged to MLflow run {result.mlflow_run_id}")


# ------------------------------------------------------------------ the options of `check`
# One alias per option keeps `check`'s signature one line a flag (typer reads the Annotated
# metadata through the alias exactly as when written inline).

_Model = Annotated[
    Path,
    typer.Argument(
        help="Dense checkpoint (prune-audit, state_dict, TorchScript, .pt2).", readable=False
    ),
]
_Data = Annotated[
    Path,
    typer.Argument(
        help="Dataset folder (labels.csv, CelebA, image folder, or .npz).", readable=False
    ),
]
_Target = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        help="Output/label column to audit, in model-output order (repeatable).",
    ),
]
_Group = Annotated[
    list[str] | None,
    typer.Option(
        "--group",
        "-g",
        help="Protected attribute column (repeatable; several → intersections too).",
    ),
]
_Labels = Annotated[
    Path | None,
    typer.Option("--labels", help="Manifest CSV (default DATA/labels.csv).", readable=False),
]
_Split = Annotated[
    str | None, typer.Option(help="Split to evaluate on (default: test if present, else all).")
]
_CalibSplit = Annotated[
    str | None, typer.Option(help="Split for threshold calibration and BN recalibration.")
]
_TrainSplit = Annotated[str | None, typer.Option(help="Split for fine-tuning recovery.")]
_Arch = Annotated[
    str | None,
    typer.Option(
        help="Architecture for a raw state_dict: torchvision:NAME or package.module:factory."
    ),
]
_IgnoreOutputNames = Annotated[
    bool,
    typer.Option(
        help="Map --target columns to model outputs by position even where the checkpoint "
        "names its outputs differently."
    ),
]
_TrustCheckpoint = Annotated[
    bool,
    typer.Option(help="Allow loading a fully pickled nn.Module (executes code from the file)."),
]
_Task = Annotated[
    str | None, typer.Option(help="multilabel | binary | multiclass (default: inferred).")
]
_Sparsity = Annotated[
    str | None,
    typer.Option(
        help="Comma list of sparsities to prune to and validate (default "
        + ",".join(f"{x:g}" for x in DEFAULT_SPARSITIES)
        + "; none with --pruned; N:M has its own)."
    ),
]
_Method = Annotated[
    str,
    typer.Option(
        help="Pruning method: "
        + "; ".join(f"{name} ({text})" for name, text in method_help())
        + "."
    ),
]
_Recovery = Annotated[
    str,
    typer.Option(
        help="After pruning: "
        + "; ".join(f"{name} ({text})" for name, text in recovery_help())
        + "."
    ),
]
_Exclude = Annotated[
    list[str] | None,
    typer.Option(help="fnmatch pattern of parameter names to leave dense (repeatable)."),
]
_Pruned = Annotated[
    list[Path] | None,
    typer.Option(
        "--pruned",
        help="An already pruned/compressed model to audit against MODEL (repeatable); "
        "any format MODEL accepts, plus safetensors, torch.nn.utils.prune / torch.ao.pruning "
        "reparametrisations and timm checkpoints.",
        readable=False,
    ),
]
_FinetuneSteps = Annotated[
    int | None,
    typer.Option(
        help="Optimiser steps of --recovery finetune (default: 300 or two epochs, "
        "whichever is more)."
    ),
]
_FinetuneEpochs = Annotated[
    int | None,
    typer.Option(help="Budget --recovery finetune in epochs instead of steps."),
]
_FinetuneLr = Annotated[
    float, typer.Option(help="Peak learning rate of --recovery finetune (warm-up + cosine).")
]
_FinetuneSeeds = Annotated[
    str, typer.Option(help="Comma list of fine-tuning seeds (modal predictions define CIEs).")
]
_NoValidate = Annotated[
    bool, typer.Option("--no-validate", help="Forecast only: one dense inference pass.")
]
_Device = Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")]
_Precision = Annotated[
    str | None, typer.Option(help="fp32 | bf16 | fp16 (default fp32 on CPU, bf16 on CUDA).")
]
_BatchSize = Annotated[int | None, typer.Option(help="Inference batch size.")]
_Workers = Annotated[int | None, typer.Option(help="Image decoding threads.")]
_ImageSize = Annotated[int | None, typer.Option(help="Resize images to N×N.")]
_Mean = Annotated[str | None, typer.Option(help="Normalisation mean, A,B,C.")]
_Std = Annotated[str | None, typer.Option(help="Normalisation std, A,B,C.")]
_TopK = Annotated[int, typer.Option(help="Susceptible samples listed in reports.")]
_Bootstrap = Annotated[int, typer.Option(help="Paired bootstrap resamples.")]
_Seed = Annotated[int, typer.Option(help="Seed for everything random.")]
_Policy = Annotated[
    Path | None,
    typer.Option(
        help="Gate policy TOML (default: [tool.prune-audit] in ./pyproject.toml).",
        readable=False,
    ),
]
_TargetSparsity = Annotated[
    float | None, typer.Option(help="Override the policy's target_sparsity.")
]
_FailOn = Annotated[
    str | None, typer.Option(help="Override the policy's fail_on: validated | forecast.")
]
_MinGroupSize = Annotated[int | None, typer.Option(help="Override the policy's min_group_size.")]
_OutDir = Annotated[Path, typer.Option("--out", help="Report directory.")]
_Format = Annotated[str, typer.Option("--format", help=_FORMAT_HELP)]
_SavePruned = Annotated[bool, typer.Option(help="Also write each pruned model as a checkpoint.")]
_SkipBadImages = Annotated[
    bool,
    typer.Option(help="Skip undecodable images (counted in the report) instead of failing."),
]
_SummaryOut = Annotated[
    Path | None, typer.Option(help="Also write the Markdown summary to this file.")
]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
_Mlflow = Annotated[
    bool,
    typer.Option(
        "--mlflow",
        help="Also log parameters, checks and reports to the active MLflow tracking URI "
        "(MLFLOW_TRACKING_URI; needs the extra prune-audit[mlflow]).",
    ),
]


def _check_policy(f: dict[str, Any]) -> tuple[Any, str]:
    """The gate policy and where it came from, with the command-line overrides applied."""
    overrides = _policy_overrides(f["target_sparsity"], f["fail_on"], f["min_group_size"])
    pol, source = load_policy(f["policy"])
    if overrides:
        from audit.config import policy_from_mapping

        pol = policy_from_mapping(
            dataclasses.asdict(pol) | overrides, source="(command-line overrides)"
        )
        source += " + command-line overrides"
    return pol, source


def _check_config(f: dict[str, Any]) -> AuditConfig:
    """Turn `check`'s options (by parameter name) into the run's :class:`AuditConfig`.

    Raises
    ------
    UsageError
        For a malformed list option or ``--task``; the config validates the rest.
    """
    pol, source = _check_policy(f)
    task = f["task"]
    if task is not None and task not in ("multilabel", "binary", "multiclass"):
        raise UsageError(f"--task {task!r} is not one of multilabel, binary, multiclass.")
    return AuditConfig(
        model=f["model"],
        data=f["data"],
        out=f["out_dir"],
        targets=tuple(f["target"] or ()),
        groups=tuple(f["group"] or ()),
        labels_file=f["labels"],
        split=f["split"],
        calib_split=f["calib_split"],
        train_split=f["train_split"],
        arch=f["arch"],
        trust_checkpoint=f["trust_checkpoint"],
        ignore_output_names=f["ignore_output_names"],
        task=task,
        sparsities=_floats(f["sparsity"], "--sparsity"),
        method=f["method"],
        recovery=f["recovery"],
        exclude=tuple(f["exclude"] or ()),
        pruned=tuple(f["pruned"] or ()),
        finetune_steps=f["finetune_steps"],
        finetune_epochs=f["finetune_epochs"],
        finetune_lr=f["finetune_lr"],
        finetune_seeds=_ints(f["finetune_seeds"], "--finetune-seeds"),
        validate=not f["no_validate"],
        device=f["device"],
        precision=f["precision"],
        batch_size=f["batch_size"],
        workers=f["workers"],
        image_size=f["image_size"],
        mean=_floats(f["mean"], "--mean", 3),
        std=_floats(f["std"], "--std", 3),  # type: ignore[arg-type]
        top_k=f["top_k"],
        bootstrap=f["bootstrap"],
        seed=f["seed"],
        policy=pol,
        policy_source=source,
        formats=tuple(f["format"].split(",")),  # the config validates against the registry
        save_pruned=f["save_pruned"],
        skip_bad_images=f["skip_bad_images"],
        summary_out=f["summary_out"],
        quiet=f["quiet"],
        mlflow=f["mlflow"],
    )


@app.command()
def check(
    model: _Model,
    data: _Data,
    target: _Target = None,
    group: _Group = None,
    labels: _Labels = None,
    split: _Split = None,
    calib_split: _CalibSplit = None,
    train_split: _TrainSplit = None,
    arch: _Arch = None,
    ignore_output_names: _IgnoreOutputNames = False,
    trust_checkpoint: _TrustCheckpoint = False,
    task: _Task = None,
    sparsity: _Sparsity = None,
    method: _Method = "global",
    recovery: _Recovery = "bn",
    exclude: _Exclude = None,
    pruned: _Pruned = None,
    finetune_steps: _FinetuneSteps = None,
    finetune_epochs: _FinetuneEpochs = None,
    finetune_lr: _FinetuneLr = DEFAULT_FINETUNE_LR,
    finetune_seeds: _FinetuneSeeds = "0",
    no_validate: _NoValidate = False,
    device: _Device = "auto",
    precision: _Precision = None,
    batch_size: _BatchSize = None,
    workers: _Workers = None,
    image_size: _ImageSize = None,
    mean: _Mean = None,
    std: _Std = None,
    top_k: _TopK = 50,
    bootstrap: _Bootstrap = 1000,
    seed: _Seed = 0,
    policy: _Policy = None,
    target_sparsity: _TargetSparsity = None,
    fail_on: _FailOn = None,
    min_group_size: _MinGroupSize = None,
    out_dir: _OutDir = Path("reports"),
    format: _Format = "json,md,html",
    save_pruned: _SavePruned = False,
    skip_bad_images: _SkipBadImages = False,
    summary_out: _SummaryOut = None,
    quiet: _Quiet = False,
    mlflow: _Mlflow = False,
) -> None:
    """Audit MODEL on DATA: dense criteria, forecast, validation by pruning, reports, gate."""
    flags = dict(locals())  # every option by name (nothing else is bound yet)
    # Path parameters say readable=False: click would reject an unreadable file as a usage
    # error (exit 2); the loaders report it as the input error it is (exit 3, SPEC §10).
    try:
        cfg = _check_config(flags)
        from audit.runner import SilentProgress, run_audit

        with _terminate_like_interrupt():
            result = run_audit(cfg, progress=SilentProgress() if quiet else RichProgress(err))
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        raise _interrupted(exc) from None
    except BaseException as exc:  # noqa: BLE001 - every failure maps to a documented exit code
        raise _fail(exc) from None
    if not result.report:  # a non-zero torchrun rank: rank 0 reports
        raise typer.Exit(0)
    _warn(result.report, result.notices)
    _summary(result, out)
    raise typer.Exit(result.exit_code)


@app.command()
def report(
    audit_json: Annotated[
        Path, typer.Argument(help="A report.json written by `check`.", readable=False)
    ],
    format: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "md,html",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory (default: beside AUDIT_JSON).")
    ] = None,
) -> None:
    """Re-render reports from a saved report.json (no model or data needed)."""
    from audit.report import validate_report, write_reports
    from audit.results import Report

    try:
        try:
            data = json.loads(audit_json.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AuditError(
                f"Cannot read {str(audit_json)!r}: {exc.strerror or exc}. "
                "Pass a report.json written by `prune-audit check`."
            ) from None
        except UnicodeDecodeError as exc:
            raise AuditError(
                f"{str(audit_json)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                f"offset {exc.start}), so it is not a report.json written by prune-audit. Pass "
                "the report.json that `prune-audit check` wrote."
            ) from None
        except RecursionError:
            raise AuditError(
                f"{str(audit_json)!r} nests JSON arrays or objects too deeply to read; it is "
                "not a report.json written by prune-audit. Pass the report.json that "
                "`prune-audit check` wrote."
            ) from None
        except json.JSONDecodeError as exc:
            raise AuditError(
                f"{str(audit_json)!r} is not valid JSON ({exc}). "
                "Pass a report.json written by `prune-audit check`."
            ) from None
        try:
            validate_report(data)
            saved = Report.from_json(data)
        except ValueError as exc:
            raise AuditError(f"{str(audit_json)!r} is not a prune-audit report: {exc}") from None
        formats = check_formats(format)
        with _terminate_like_interrupt():
            files = write_reports(saved.to_json(), out_dir or audit_json.parent, formats=formats)
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        raise _interrupted(exc) from None
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    for f in files:
        out.print(f"wrote {escape(str(f))}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path(
        "reports/demo"
    ),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000,
    seed: Annotated[
        int, typer.Option(help="Seed of the example data (and of the model, with --retrain).")
    ] = 0,
    retrain: Annotated[
        bool,
        typer.Option(
            help="Train the example model on this machine instead of using the shipped one "
            "(always done for a seed other than 0); its numbers then depend on the CPU."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Audit the bundled example: seeded synthetic data (cached) and the shipped small CNN.

    The demo exits 0 when the audit ran, whatever the gate decided: the example is built so
    that pruning does increase bias on one attribute, and the report shows it.
    """
    progress = None
    try:
        from audit.demo import DEMO_GROUP, demo_data_matches_shipped, prepare_demo
        from audit.runner import SilentProgress, run_audit

        progress = SilentProgress() if quiet else RichProgress(err)
        with (
            _terminate_like_interrupt(),
            progress.task("Preparing the example (cached after the first run)", None),
        ):
            model_path, data_dir = prepare_demo(seed=seed, retrain=retrain)
        if seed == 0 and not demo_data_matches_shipped(data_dir):
            err.print(
                "[yellow]warning:[/yellow] the generated example data differ from the data "
                "the shipped model was measured on (another numpy version?), so the numbers "
                f"can differ from README's. Data: {escape(str(data_dir))}",
                soft_wrap=True,
            )
        cfg = AuditConfig(
            model=model_path,
            data=data_dir,
            out=out_dir,
            groups=(DEMO_GROUP,),
            device=device,
            bootstrap=bootstrap,
            seed=seed,
            quiet=quiet,
        )
        with _terminate_like_interrupt():
            result = run_audit(cfg, progress=progress)
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        raise _interrupted(exc) from None
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    _warn(result.report)
    _summary(result, out)
    out.print(
        "This is the bundled example: the protected attribute is spuriously tied to one target "
        "in the train split only, so pruning widens that target's group gaps at high sparsity "
        f"more than the controls'. The demo exits 0 whatever the gate said; open "
        f"{out_dir / 'report.html'} for the evidence."
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_INPUT)
        sys.exit(code)


if __name__ == "__main__":
    main()
