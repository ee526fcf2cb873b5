"""Mutation testing (opt-in, not in CI): does the suite fail when the code is wrong?

    python tests/mutation.py budget           # metricc/budget.py (also parse, emit)
    python tests/mutation.py relax            # metricc/relax.py
    python tests/mutation.py derive           # metricc/derive.py
    python tests/mutation.py runtime          # metricc/runtime.py
    python tests/mutation.py runtime --sample 300  # 300 mutants drawn at random (seed 0): an estimate
    python tests/mutation.py runtime --survivors   # list the surviving mutants of the last run, with diffs
    python tests/mutation.py runtime --rerun-survivors   # the survivors again, with the tests as they are now

mutmut (``pip install mutmut``) changes one operator, constant or call at a time in the module and runs
the tests that execute the changed function; a mutant is *killed* when one of them fails. Each module
gets a fast, targeted selection of tests (below), so a run fits a 2-core machine: the script copies the
working tree (tracked and untracked, not ignored files) to a scratch folder, adds mutmut's settings
there (nothing in the repository changes), and runs mutmut under ``nice``, one worker by default.
It prints the counts and the mutation score, killed / (killed + survived + timeouts); mutants in code
no selected test executes are counted apart ("no tests").

For ``runtime`` and ``emit`` the worker processes start with the selection's losses already compiled (a
warm-up module imported before forking): a mutant of either cannot change what sympy derives or what the
analysis proves, both cached apart from the module, and compiling each loss again in every worker would
cost most of the run. A mutant of the emitter still runs: every compile emits the source again and imports
it anew unless it is the very text the warm-up imported. ``relax`` and ``derive`` start cold, since their
mutants change exactly what is cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAXATIONS = ["anyloss", "sigmoid:L=30,threshold=0.4", "linear", "identity", "sol", "sol:distribution=cosine"]
EMIT_CHECKS = [
    "test_weights_and_thresholds_against_plain_composition", "test_many_thresholds_are_processed_in_chunks",
    "test_label_selection_is_exact", "test_probabilities_input_and_n_by_1_shapes", "test_bad_targets_get_clear",
    "test_bad_inputs_get_clear_errors", "test_target_dtypes_are_all_accepted", "test_zero_division_policy",
    "test_saturated_sol_batch", "test_gradient_does_not_vanish", "test_compiled_loss_pickles",
    "test_combines_with_other_losses", "test_cpu_float_path",
]


def _node(path, test, *params):
    return f"tests/{path}::{test}" + (f"[{'-'.join(params)}]" if params else "")


def _matrix(path, test, metrics, relaxations=RELAXATIONS):
    return [_node(path, test, metric, relaxation) for metric in metrics for relaxation in relaxations]


SELECTIONS = {
    # Budgets: deadlines, the watchdog, threads, ownership of exceptions; the analysis's use of them.
    "budget": ["tests/test_budget.py",
               "tests/test_hostile.py::test_the_nested_abs_metric_is_answered_within_the_budget",
               "tests/test_hostile.py::test_every_expression_is_compiled_or_refused_within_the_budget",
               "tests/test_analyze.py::test_unknown_says_what_was_tried_and_names_the_time_budget_only_when_it_ran_out"],
    # The parser: the grammar, its refusals and positions, the written domain, hostile text, names, limits.
    "parse": ["tests/test_parse.py", "tests/test_parse_refusals.py", "tests/test_fuzz.py",
              "tests/test_properties.py::test_printing_a_parsed_metric_and_parsing_it_again_gives_the_same_expression",
              "tests/test_properties.py::test_round_trip_regressions",
              "tests/test_properties.py::test_raw_expressions_parse_unless_their_symbols_cancel",
              "tests/test_analyze.py::test_the_report_says_what_simplification_changed_in_the_written_domain",
              "tests/test_analyze.py::test_poles_and_invalid_arguments_inside_the_domain",
              "tests/test_hostile.py::test_nested_powers_and_exp_of_exp_are_refused_by_structure",
              "tests/test_hostile.py::test_parameter_names_that_are_not_plain_identifiers",
              "tests/test_hostile.py::test_a_parameter_name_with_code_is_refused",
              "tests/test_hostile.py::test_a_relaxation_option_given_twice"],
    # The code generator: every catalog metric once, names, options, the source's parts, standalone files.
    "emit": [*_matrix("test_emit.py", "test_closed_form_backward_equals_autograd_of_plain_composition",
                      ["f1", "mcc", "tversky", "gmean"], ["anyloss", "linear"]),
             *[f"tests/test_emit.py::{name}" for name in (
                 "test_a_single_threshold_other_than", "test_a_parameter_named_like_a_local",
                 "test_weights_and_thresholds_against_plain_composition", "test_minimized_metric_loss_is_the_metric",
                 "test_zero_division_policy", "test_generated_source_imports_only_the_runtime",
                 "test_source_carries_metric_relaxation_parameters_and_derivation", "test_compile_is_cached_by_content",
                 "test_compiled_loss_pickles", "test_metric_names_land_in_code",
                 "test_cpu_float_path_equals_the_tensor_path", "test_cpu_float_path_leaves_undefined")],
             "tests/test_emit_golden.py", "tests/test_emit_parts.py", "tests/test_derivation_text.py",
             "tests/test_curves.py", "tests/test_multiclass.py",
             "tests/test_fuzz.py::test_metric_names_become_identifiers_or_are_refused",
             "tests/test_fuzz.py::test_sources_and_descriptions_stay_inside_their_strings",
             "tests/test_hostile.py::test_numpy_option_values", "tests/test_hostile.py::test_non_finite_option_values",
             "tests/test_hostile.py::test_text_written_into_the_source",
             "tests/test_hostile.py::test_any_parameter_name",
             "tests/test_hostile.py::test_a_hand_built_metric_holds_only", "tests/test_cli_errors.py"],
    # The relaxations' parameters, specs, symbolic forms, amplifier ranges, and each relaxation once in a loss.
    "relax": ["tests/test_relax.py", "tests/test_derive.py",
              "tests/test_emit.py::test_source_carries_metric_relaxation_parameters_and_derivation",
              *_matrix("test_emit.py", "test_closed_form_backward_equals_autograd_of_plain_composition", ["f1"]),
              *_matrix("test_degenerate.py", "test_degenerate_batches_against_50_digit_arithmetic", ["f1"])],
    # Derivatives of catalog metrics and of random expressions, against the oracle.
    "derive": ["tests/test_derive.py", "tests/test_derivation_text.py", "tests/test_curves.py",
               *_matrix("test_emit.py", "test_closed_form_backward_equals_autograd_of_plain_composition",
                        ["f1", "mcc", "gmean", "balanced_accuracy", "cohen_kappa", "fowlkes_mallows"], ["anyloss"]),
               "tests/test_properties.py::test_small_and_single_class_batches_match_autograd_of_the_direct_sums",
               "tests/test_properties.py::test_abs_of_a_root_is_differentiated_as_a_real_function",
               "tests/test_properties.py::test_simplified_gradients_take_no_root_of_a_quantity_that_can_be_negative",
               "tests/test_properties.py::test_max_with_numbers_and_a_parameter_clamps_with_their_maximum"],
    # The runtime: relaxations in torch, the four sums, evaluate, the backward, checks, non-finite input.
    "runtime": ["tests/test_relax.py", "tests/test_hard_limits.py",
                *_matrix("test_degenerate.py", "test_degenerate_batches_against_50_digit_arithmetic",
                         ["f1", "mcc", "gmean", "specificity", "precision", "balanced_accuracy"]),
                *[f"tests/test_degenerate.py::{name}" for name in (
                    "test_nan_in_the_input_or_non_finite_weights_make_the_loss_and_gradient_nan",
                    "test_half_precision_input_computes_in_float32", "test_autocast_bfloat16_logits_train",
                    "test_soft_labels_match_autograd_of_the_plain_formula",
                    "test_validate_false_skips_the_checks_and_changes_nothing_else",
                    "test_a_tensor_on_another_device_is_refused_with_what_to_do")],
                *[f"tests/test_emit.py::{name}" for name in EMIT_CHECKS],
                "tests/test_multiclass.py::test_per_class_metrics_and_their_average_against_autograd",
                "tests/test_multiclass.py::test_class_weights_weigh_the_per_class_losses",
                "tests/test_multiclass.py::test_multilabel_threshold_averaging_against_autograd",
                "tests/test_multiclass.py::test_bad_class_batches_get_clear_errors"],
}
# Tests a selection's files hold that exercise nothing of the module but cost most of each mutant's run.
DESELECT = {"emit": ["tests/test_curves.py::test_compiled_curve_loss_equals_eager"]}  # torch.compile: 13 s
# Modules whose workers start with the selection's losses compiled (see the module's docstring).
WARM = ("runtime", "emit")
WARMUP = '''"""Imported by mutmut's fork server before it forks workers: compile the selection's losses once."""
import warnings

import metricc
from metricc.catalog import catalog

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in catalog():
        for relaxation in {relaxations!r}:
            try:
                metricc.compile_metric(name, relaxation=relaxation)
            except ValueError as error:  # a curve metric needs a relaxation with a threshold: the tests expect it
                if "needs a relaxation with a threshold" not in str(error):
                    raise
    for name in ("f1", "mcc", "balanced_accuracy", "precision"):
        for task, relaxations in (("multiclass", ("anyloss", "identity")),
                                  ("multilabel", ("anyloss", "linear", "sol:distribution=cosine"))):
            for relaxation in relaxations:
                for average in ("macro", "micro", "weighted"):
                    metricc.compile_metric(name, task=task, num_classes=3, average=average, relaxation=relaxation)
'''


def _expand(selection):
    """Node ids for entries that name a test function by the start of its name."""
    files = sorted({entry.split("::")[0] for entry in selection if "::" in entry})
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *files], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    nodes = []
    for entry in selection:
        if "::" not in entry or "[" in entry:
            nodes.append(entry)
            continue
        matches = [node for node in collected if node.startswith(entry)]
        if not matches:
            raise SystemExit(f"no test matches {entry}")
        nodes += matches
    return nodes


def _copy_tree(destination: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _settings(module: str, selection: list[str]) -> str:
    also_copy = ["grammar"] + (["mutation_warmup.py"] if module in WARM else [])
    deselect = [argument for node in DESELECT.get(module, []) for argument in ("--deselect", node)]
    lines = ["", "[tool.mutmut]", 'source_paths = ["metricc"]', f'only_mutate = ["metricc/{module}.py"]',
             f"also_copy = {json.dumps(also_copy)}",
             f"pytest_add_cli_args = {json.dumps(['-p', 'no:cacheprovider', *deselect])}",
             f"pytest_add_cli_args_test_selection = {json.dumps(selection)}",
             'process_isolation = "forkserver"', "timeout_multiplier = 4.0", "timeout_constant = 20.0"]
    if module in WARM:
        lines += ['forkserver_warmup = "import"', 'preload_modules_file = "mutation_warmup.txt"']
    return "\n".join(lines) + "\n"


def _sample(folder: Path, module: str, count: int, env: dict) -> list[str]:
    """``count`` mutant names drawn with a fixed seed; mutmut generates the mutants when a run starts, so a
    first run is started and stopped as soon as they exist."""
    import random
    import signal
    import time

    meta = folder / "mutants" / "metricc" / f"{module}.py.meta"
    if not meta.exists():
        process = subprocess.Popen([sys.executable, "-m", "mutmut", "run"], cwd=folder, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not meta.exists() and process.poll() is None:
            time.sleep(2)
        time.sleep(2)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    print(f"{count} of {len(names)} mutants drawn at random (seed 0)", flush=True)
    return sorted(random.Random(0).sample(names, min(count, len(names))))


def _survivors(folder: Path, statuses=("survived",)) -> list[str]:
    lines = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=folder,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split(":")[0].strip() for line in lines if line.rsplit(": ", 1)[-1].strip() in statuses]


def _counts(folder: Path) -> dict:
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=folder, check=True,
                   capture_output=True)
    return json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())


def _report(module: str, counts: dict) -> None:
    killed, survived, timeout = counts.get("killed", 0), counts.get("survived", 0), counts.get("timeout", 0)
    tried = killed + survived + timeout
    print(f"metricc/{module}.py: {counts.get('total', '?')} mutants; killed {killed}, survived {survived}, "
          f"timeout {timeout}, no tests {counts.get('no_tests', 0)}, other {json.dumps(counts)}")
    if tried:
        print(f"mutation score {100 * killed / tried:.1f} % of the mutants the selection executes "
              f"({killed}/{tried})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", choices=sorted(SELECTIONS))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: <tmp>/metricc-mutation-<module>); reused to resume a run")
    parser.add_argument("--fresh", action="store_true", help="delete the scratch folder first")
    parser.add_argument("--max-children", type=int, default=1, help="parallel workers (default 1)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="test N mutants drawn at random (seed 0) instead of all: an estimate of the score "
                             "(runtime.py has some 2,200 mutants, hours on 2 cores)")
    parser.add_argument("--without", action="append", default=[], metavar="TESTFILE",
                        help="leave this test file out (repeatable): the score before it existed")
    parser.add_argument("--survivors", action="store_true", help="list the last run's survivors with their diffs")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="copy the current tests and selection into the scratch folder and run the last run's "
                             "survivors again: the score after new assertions")
    args = parser.parse_args(argv)
    folder = args.workdir or Path(tempfile.gettempdir()) / f"metricc-mutation-{args.module}"
    if args.survivors:
        for name in _survivors(folder):
            print(subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=folder, capture_output=True,
                                 text=True).stdout)
        _report(args.module, _counts(folder))
        return 0
    names = []
    if args.rerun_survivors:  # and those that timed out, and those no selected test executed, which new tests may
        names = _survivors(folder, ("survived", "no tests", "timeout"))
        shutil.rmtree(folder / "tests")
        shutil.copytree(ROOT / "tests", folder / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        settings = (folder / "pyproject.toml").read_text(encoding="utf-8").split("\n[tool.mutmut]\n")[0]
        (folder / "pyproject.toml").write_text(settings + _settings(args.module, _expand(SELECTIONS[args.module])),
                                               encoding="utf-8")
        print(f"{len(names)} survivors to run again", flush=True)
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    if not (folder / "mutants").exists():
        folder.mkdir(parents=True, exist_ok=True)
        _copy_tree(folder)
        for path in args.without:
            (folder / path).unlink()
        selection = [entry for entry in _expand(SELECTIONS[args.module])
                     if entry.split("::")[0] not in args.without]
        with (folder / "pyproject.toml").open("a", encoding="utf-8") as handle:
            handle.write(_settings(args.module, selection))
        if args.module in WARM:
            (folder / "mutation_warmup.py").write_text(WARMUP.format(relaxations=RELAXATIONS))
            (folder / "mutation_warmup.txt").write_text("mutation_warmup\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "METRICC_PROFILE": "ci",
           "PYTHONHASHSEED": "0"}
    if args.sample is not None and not names:
        names = _sample(folder, args.module, args.sample, env)
    command = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children),
               *names]
    print(f"in {folder}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=folder, env=env)
    _report(args.module, _counts(folder))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
