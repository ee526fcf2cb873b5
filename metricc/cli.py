"""The ``metricc`` command line: a thin layer over the public API.

Exit codes: 0 success; 1 finished with warnings (``check``); 2 bad input or a
metric that cannot serve as a loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import NO_VALUE, Option
from .runtime import AVERAGES, CLASS_WEIGHT_RULES, ESTIMATORS, REDUCES, REDUCTIONS, TASKS

EXIT_OK, EXIT_WARNINGS, EXIT_ERROR = 0, 1, 2


def flag(option: Option) -> str:
    """An API option as this command line spells it: ``check=False`` → ``--no-check``,
    ``params={'beta': 2}`` → ``--param beta=2``, ``direction='maximize'`` → ``--direction maximize``."""
    name, value = option.name, option.value
    if name == "params":
        if value is NO_VALUE or not value:
            return "--param"
        return " ".join(f"--param {key}={'VALUE' if v is ... else _number(v)}" for key, v in value.items())
    if name == "check":
        return "--no-check" if value is False else "(the default)"
    if name == "from_logits":
        return "--probabilities" if value is False else "(the default)"
    spelled = "--" + name.replace("_", "-")
    if value is NO_VALUE:
        return spelled
    if value is ...:
        return f"{spelled} VALUE"
    if value is True:
        return spelled
    if isinstance(value, (list, tuple)):
        return f"{spelled} {','.join(_number(v) for v in value)}"
    return f"{spelled} {_number(value) if isinstance(value, (int, float)) else value}"


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _render(exc: BaseException | Warning | str) -> str:
    """An exception's message with the options it suggests spelt as flags."""
    render = getattr(exc, "render", None)
    return render(flag) if callable(render) else str(exc)


def _parse_param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--param needs NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {name.strip()} needs a number, got {value!r}") from None


def unique_params(pairs, option: str = "--param") -> dict[str, float]:
    """``--param`` values as a dict; a name given twice is refused (a dict would keep the last silently)."""
    params: dict[str, float] = {}
    for name, value in pairs:
        if name in params:
            raise ValueError(f"{option} {name} is given twice ({name}={_number(params[name])} and "
                             f"{name}={_number(value)}); give each parameter once")
        params[name] = value
    return params


def _parse_thresholds(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--thresholds needs comma-separated numbers, got {text!r}") from None


def _parse_zero_division(text: str) -> float | None:
    if text.lower() in ("none", "nan"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--zero-division needs a number or 'none', got {text!r}") from None


def _add_metric_arguments(parser: argparse.ArgumentParser, relaxation: bool = True) -> None:
    parser.add_argument("metric", help="an expression over TP FN FP TN (quote it), or a catalog name")
    parser.add_argument("--param", "-p", action="append", type=_parse_param, default=[], metavar="NAME=VALUE",
                        help="a parameter value, e.g. --param beta=2 (repeatable)")
    if relaxation:
        parser.add_argument("--relaxation", "-r", default=None,
                            help="anyloss (the default; identity for --task multiclass), linear, identity, sol, "
                                 "or e.g. 'sigmoid:L=30,threshold=0.4'")
        parser.add_argument("--thresholds", type=_parse_thresholds, default=None, metavar="T1,T2,...",
                            help="average the metric over these thresholds, e.g. 0.1,0.2,...,0.9")
        parser.add_argument("--direction", choices=("maximize", "minimize"), default=None,
                            help="override the direction (default: the catalog's, else the analysis's)")


def _add_problem_arguments(parser: argparse.ArgumentParser, multipliers: bool = False) -> None:
    parser.add_argument("--constraint", "-c", action="append", default=[], metavar="EXPR",
                        help="a constraint such as 'precision >= 0.9' (repeatable; or write the metric as "
                             "'recall subject to precision >= 0.9'); see docs/constraints.md")
    parser.add_argument("--groups", type=int, default=None, metavar="G",
                        help="the number of groups, for metrics and constraints over TP[g] ... (max_g, min_g, ...)")
    if multipliers:
        parser.add_argument("--multiplier-lr", type=float, default=None, metavar="ETA",
                            help="the multipliers' step size (default 0.05)")
        parser.add_argument("--max-multiplier", type=float, default=None, help="the multipliers' bound (default 100)")
        parser.add_argument("--multiplier-update", choices=("auto", "manual"), default=None,
                            help="auto (a step after every training call; the default) or manual "
                                 "(loss_fn.step_multipliers())")
        parser.add_argument("--constraint-rates", choices=("hard", "relaxed"), default=None,
                            help="the rates the multipliers ascend: hard predictions (the default, "
                                 "proxy-Lagrangian) or the relaxed ones")
        parser.add_argument("--penalty", type=float, default=None, metavar="RHO",
                            help="augment the Lagrangian with a quadratic penalty of weight RHO (default 0)")


def _problem_options(args) -> dict:
    """The constraint and group options the user gave (none at all for a plain metric)."""
    options = {}
    if args.constraint:
        options["constraints"] = list(args.constraint)
    if args.groups is not None:
        options["groups"] = args.groups
    for name in ("multiplier_lr", "max_multiplier", "multiplier_update", "constraint_rates", "penalty"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="binary",
                        help="binary (default): logits (N,); multiclass or multilabel: logits (N, C)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="C",
                        help="number of classes or labels, for --task multiclass or multilabel")
    parser.add_argument("--num-labels", type=int, default=None, metavar="L",
                        help="number of labels, for --task multilabel (the same as --num-classes)")
    parser.add_argument("--average", choices=AVERAGES, default=None,
                        help="how per-class metrics combine (default macro), as scikit-learn's average=")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricc",
        description="Compile confusion-matrix metrics (F1, MCC, G-mean, ...) into PyTorch losses.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_ = commands.add_parser("compile", help="write a PyTorch loss module for a metric")
    _add_metric_arguments(compile_)
    _add_task_arguments(compile_)
    compile_.add_argument("--name", help="Python identifier naming the loss (default: catalog name or 'metric')")
    compile_.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    compile_.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    compile_.add_argument("--probabilities", action="store_true",
                          help="the loss takes probabilities by default instead of logits")
    compile_.add_argument("--zero-division", type=_parse_zero_division, default=0.0, metavar="VALUE",
                          help="metric value on batches where it is undefined (default 0; 'none' lets NaN through)")
    compile_.add_argument("--sync", action="store_true",
                          help="all-reduce statistics across torch.distributed ranks by default (exact DDP loss)")
    compile_.add_argument("--reduce", choices=REDUCES, default="batch",
                          help="sum the entries over the whole batch (default; MONAI batch=True) or per image, "
                               "averaging the per-image metric (MONAI's default)")
    compile_.add_argument("--reduction", choices=REDUCTIONS, default="mean",
                          help="as torch.nn losses: mean (default), sum, or none (the loss per class [and image])")
    compile_.add_argument("--ignore-index", type=int, default=None, metavar="VALUE",
                          help="a target value whose pixels contribute nothing (e.g. 255)")
    compile_.add_argument("--class-weights", choices=tuple(CLASS_WEIGHT_RULES), default=None,
                          help="weigh each class's entries by 1/support**2 (generalized Dice) or 1/support, "
                               "summed over classes")
    compile_.add_argument("--estimator", choices=ESTIMATORS, default="batch",
                          help="'running': the metric of a running estimate across steps, for small batches")
    compile_.add_argument("--momentum", type=float, default=None,
                          help="the running estimate's momentum (default 0.9; needs --estimator running)")
    compile_.add_argument("--standalone", action="store_true",
                          help="inline metricc's runtime: a file that imports only torch (default: imports metricc)")
    compile_.add_argument("--no-check", action="store_true", help="skip the analysis gate")
    _add_problem_arguments(compile_, multipliers=True)
    compile_.set_defaults(handler=_compile)

    derive_ = commands.add_parser("derive", help="print the closed-form gradient of a metric loss")
    _add_metric_arguments(derive_)
    _add_task_arguments(derive_)
    derive_.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    _add_problem_arguments(derive_)
    derive_.set_defaults(handler=_derive)

    list_ = commands.add_parser("list", help="list the named metrics of the catalog")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.set_defaults(handler=_list)

    check_ = commands.add_parser("check", help="prove range, direction, Lipschitz bound and singular batches")
    _add_metric_arguments(check_, relaxation=False)
    check_.add_argument("--min-prevalence", type=float, default=0.01,
                        help="smallest batch prevalence P/n the Lipschitz bound covers (default 0.01)")
    check_.add_argument("--json", action="store_true", help="print JSON")
    check_.add_argument("--direction", choices=("maximize", "minimize"), default=None,
                        help="the direction to check the metric as a loss in (default: the catalog's, else the "
                             "analysis's); a constraint such as 'precision >= 0.9' needs none")
    _add_problem_arguments(check_)
    check_.set_defaults(handler=_check)

    experiment_ = commands.add_parser("experiment", help="train models with compiled losses and compare to BCE")
    experiment_.set_defaults(handler=_experiment)
    _add_experiment_arguments(experiment_)
    return parser


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        from .experiments.runner import add_arguments
    except ImportError:
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        return
    add_arguments(parser)


def _version() -> str:
    from . import __version__  # the one source of the version (pyproject reads it too)

    return __version__


def _compile(args) -> int:
    from . import compile_metric
    from .files import check_writable, write_file

    if args.output is not None:
        check_writable([args.output], args.force, option="-o")  # before compiling, not after
    if args.momentum is not None and args.estimator != "running":  # it would be ignored
        raise ValueError("--momentum applies to the running estimator; add --estimator running")
    params = unique_params(args.param)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = compile_metric(args.metric, params=params, name=args.name, relaxation=args.relaxation,
                              thresholds=args.thresholds, direction=args.direction, task=args.task,
                              num_classes=args.num_classes, num_labels=args.num_labels, average=args.average,
                              class_weights=args.class_weights, reduce=args.reduce, reduction=args.reduction,
                              ignore_index=args.ignore_index,
                              from_logits=not args.probabilities, zero_division=args.zero_division,
                              estimator=args.estimator, momentum=0.9 if args.momentum is None else args.momentum,
                              sync=args.sync,
                              check=not args.no_check, **_problem_options(args))
    for warning in caught:
        print(f"metricc: warning: {_render(warning.message)}", file=sys.stderr)
    source = loss.standalone_source() if args.standalone else loss.source
    if args.output is None:
        sys.stdout.write(source)
    else:
        write_file(args.output, source, overwrite=args.force)
        runtime = "metricc.lagrangian" if "from metricc.lagrangian" in source else "metricc.runtime"
        kind = "standalone, imports only torch" if args.standalone else f"imports {runtime}"
        print(f"metricc: wrote {args.output} ({loss.metric.name}, {len(source.splitlines())} lines, {kind})",
              file=sys.stderr)
    return EXIT_OK


def _derive(args) -> int:
    from . import derive, parse
    from .problem import is_problem, make_problem
    from .relax import default_relaxation

    params = unique_params(args.param)
    relaxation = default_relaxation(args.task) if args.relaxation is None else args.relaxation
    options = _problem_options(args)
    if is_problem(args.metric, params=params, **options):
        from .derive_problem import derive_problem

        problem = make_problem(args.metric, params=params, **options)
        lagrangian = derive_problem(problem, relaxation, direction=args.direction, thresholds=args.thresholds)
        print(lagrangian.latex() if args.latex else lagrangian.text())
        return EXIT_OK
    metric = parse(args.metric, params)
    derivation = derive(metric, relaxation, direction=args.direction, thresholds=args.thresholds)
    if args.latex:
        print(derivation.latex())
    else:
        print(derivation.text(task=args.task, average=args.average,
                              num_classes=args.num_classes if args.num_labels is None else args.num_labels))
    return EXIT_OK


def _list(args) -> int:
    from .catalog import catalog

    entries = list(catalog().values())
    if args.json:
        print(json.dumps([{"name": e.name, "expression": e.expression, "direction": e.direction,
                           "params": e.default_params, "aliases": list(e.aliases), "description": e.description,
                           "reference": e.reference} for e in entries], indent=2))
        return EXIT_OK
    rows = [("name", "direction", "parameters", "aliases", "expression", "description")]
    for e in entries:
        params = ", ".join(f"{k}={v:g}" for k, v in e.params)
        rows.append((e.name, e.direction, params, ", ".join(e.aliases), e.expression, e.description))
    print(_table(rows))
    return EXIT_OK


def _table(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(str(row[-1])))
    return "\n".join(lines)


def _check(args) -> int:
    from .analyze import analyze
    from .constraints import is_comparison
    from .errors import render
    from .problem import check_problem, is_problem, make_problem

    params = unique_params(args.param)
    options = _problem_options(args)
    if is_comparison(args.metric) and not args.constraint:  # metricc check "precision >= 0.9": the constraint
        return _check_constraints(args, options)
    if is_problem(args.metric, params=params, **options):
        problem = make_problem(args.metric, params=params, **options)
        checked = check_problem(problem, min_prevalence=args.min_prevalence)
        if args.json:
            data = checked.to_dict()
            data["problems"] = [render(p, flag) for p in checked.problem_parts(args.direction)]
            print(json.dumps(data, indent=2))
        else:
            print(checked.table(spell=flag, direction=args.direction))
        if checked.problem_parts(args.direction):
            return EXIT_ERROR
        objective_findings = checked.objective is not None and bool(checked.objective.warnings)
        findings = objective_findings or any(check.findings for check in checked.constraints)
        return EXIT_WARNINGS if findings else EXIT_OK
    report = analyze(args.metric, params=params, min_prevalence=args.min_prevalence)
    if args.json:
        data = report.to_dict()
        data["problems"] = report.blocking_problems(spell=flag)
        print(json.dumps(data, indent=2))
    else:
        print(report.table(spell=flag, direction=args.direction))
    if report.blocking_problems(args.direction):
        return EXIT_ERROR
    return EXIT_WARNINGS if report.warnings else EXIT_OK


def _check_constraints(args, options) -> int:
    """``metricc check "max_g(...) - min_g(...) <= 0.05" --groups 2``: the constraints' checks alone."""
    from .constraints import parse_constraint
    from .errors import render
    from .groups import has_group_entries
    from .problem import check_constraint

    constraints = parse_constraint(args.metric, unique_params(args.param))
    groups = options.get("groups")
    if groups is None and any(has_group_entries(c.metric.expr) for c in constraints):
        raise ValueError("the constraint reads group entries (TP[g] …): pass --groups with the number of groups")
    checks = [check_constraint(c, groups or 1, args.min_prevalence) for c in constraints]
    if args.json:
        print(json.dumps([{"constraint": c.constraint.text, "ok": c.ok, "range": list(c.report.range),
                           "problems": [render(p, flag) for p in c.problems],
                           "warnings": [render(p, flag) for _, p in c.findings]} for c in checks], indent=2))
    else:
        print("\n\n".join(check.table(index, flag) for index, check in enumerate(checks, 1)))
    if not all(check.ok for check in checks):
        return EXIT_ERROR
    return EXIT_WARNINGS if any(check.findings for check in checks) else EXIT_OK


def _experiment(args) -> int:
    try:
        from .experiments.runner import run_from_args
    except ImportError as exc:
        print(f"metricc: experiments need the optional extra: pip install 'metricc[experiments]' ({exc})",
              file=sys.stderr)
        return EXIT_ERROR
    return run_from_args(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from .errors import MetricCheckError, MetricSyntaxError

    parser = build_parser()
    args = parser.parse_args(_expressions_as_positionals(parser, sys.argv[1:] if argv is None else list(argv)))
    try:
        return args.handler(args)
    except (MetricSyntaxError, MetricCheckError) as exc:
        print(f"metricc: error: {_render(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `metricc compile f1 | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ValueError, TypeError, OSError) as exc:  # OSError: an output path that cannot be written
        print(f"metricc: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


_METRIC_COMMANDS = ("compile", "derive", "check")


def _expressions_as_positionals(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Let a metric expression start with '-' (``metricc check "-TP/(TP+FN)"``).

    argparse reads any argument that starts with '-' as an option. An argument of a metric
    command that starts with a single '-' and is neither one of the command's options
    (``-p``, ``--param``, ``-pbeta=2``, ...) nor the value of the option before it is the
    metric: it moves behind ``--``, where argparse reads it as the positional it is.
    """
    if "--" in argv:
        return argv
    command = next((index for index, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command is None or argv[command] not in _METRIC_COMMANDS:
        return argv
    subparser = _subparsers(parser)[argv[command]]
    takes_value = {}
    for action in subparser._actions:
        for option in action.option_strings:
            takes_value[option] = action.nargs != 0
    short = {option for option in takes_value if len(option) == 2}
    rest, expression = [], None
    index = command + 1
    while index < len(argv):
        arg = argv[index]
        name = arg.split("=", 1)[0]
        if arg in takes_value or name in takes_value or (arg.startswith("--") and len(arg) > 2):
            rest.append(arg)
            if takes_value.get(arg) and index + 1 < len(argv):  # its value, whatever it looks like
                rest.append(argv[index + 1])
                index += 1
        elif arg.startswith("-") and arg[:2] not in short and expression is None and len(arg) > 1:
            expression = arg
        else:
            rest.append(arg)
        index += 1
    if expression is None:
        return argv
    return argv[: command + 1] + rest + ["--", expression]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
