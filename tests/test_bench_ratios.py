"""bench/chain_throughput.py: the same-round ratios pair each round's runs, in order, and the budget
against an earlier checkout (--against) is judged on them. Synthetic results: no servers needed."""

from bench.chain_throughput import BUDGET_CPU, BUDGET_FLOWS, budget, budget_lines, round_ratios


def _runs(*rates):
    return [{"flows_per_s": rate} for rate in rates]


def _run(flows_per_s, cpu_ms):
    """One measured run whose CPU ms per create of all processes (the `all` column) is cpu_ms."""
    return {"flows_per_s": flows_per_s, "worker_cpu_ms": cpu_ms - 3.0, "pg_cpu_ms": 2.0, "client_cpu_ms": 1.0}


def _both_modes(this, earlier):
    """The same (this, earlier) pairs of runs in both event modes."""
    return {(kind, events): runs for events in (False, True)
            for kind, runs in (("volchain", this), ("earlier", earlier))}


def test_same_round_ratios_pair_runs_of_the_same_round():
    results = {("volchain", False): _runs(50.0, 90.0), ("noop", False): _runs(100.0, 150.0),
               ("volchain", True): _runs(40.0), ("noop", True): _runs(80.0)}
    assert round_ratios(results, "volchain", "noop", False) == [50.0, 60.0]
    assert round_ratios(results, "volchain", "noop", True) == [50.0]


def test_same_round_ratios_are_empty_without_the_baseline():
    results = {("volchain", False): _runs(50.0)}
    assert round_ratios(results, "volchain", "floor", False) == []


def test_budget_is_met_when_flows_and_cpu_are_within_it_in_both_event_modes():
    met, per_mode = budget(_both_modes([_run(95.0, 16.0)], [_run(100.0, 15.0)]))
    assert met
    assert [m.events for m in per_mode] == [False, True]
    assert per_mode[0].flows == [0.95]
    assert abs(per_mode[0].cpu[0] - 16.0 / 15.0) < 1e-9
    assert budget_lines(met, per_mode, "volchain @ abc1234")[-1] == "-> budget MET"


def test_budget_holds_exactly_at_its_limits():
    assert (BUDGET_FLOWS, BUDGET_CPU) == (0.90, 1.15)
    met, _ = budget(_both_modes([_run(90.0, 23.0)], [_run(100.0, 20.0)]))
    assert met


def test_budget_is_not_met_when_flows_fall_below_ninety_percent_in_one_mode():
    results = _both_modes([_run(95.0, 15.0)], [_run(100.0, 15.0)])
    results[("volchain", True)] = [_run(89.0, 15.0)]
    met, per_mode = budget(results)
    assert not met
    assert per_mode[0].met and not per_mode[1].flows_ok and per_mode[1].cpu_ok
    verdict = budget_lines(met, per_mode, "volchain @ abc1234")[-1]
    assert verdict.startswith("-> budget NOT met") and "events on flows/s 89% < 90%" in verdict


def test_budget_is_not_met_when_cpu_per_create_exceeds_one_point_one_five():
    met, per_mode = budget(_both_modes([_run(100.0, 17.5)], [_run(100.0, 15.0)]))
    assert not met
    assert all(m.flows_ok and not m.cpu_ok for m in per_mode)
    assert "CPU 1.17x > 1.15x" in budget_lines(met, per_mode, "volchain @ abc1234")[-1]


def test_budget_is_not_met_when_an_event_mode_was_not_measured():
    results = {("volchain", False): [_run(100.0, 15.0)], ("earlier", False): [_run(100.0, 15.0)]}
    met, per_mode = budget(results)
    assert not met
    assert per_mode[0].met and not per_mode[1].met and per_mode[1].flows == []
    lines = budget_lines(met, per_mode, "volchain @ abc1234")
    assert "  events on: not measured" in lines
    assert lines[-1] == "-> budget NOT met (events on not measured)"


def test_budget_is_not_met_without_a_cpu_figure():
    """PostgreSQL on another machine: its CPU is unknown, so CPU per create cannot be judged."""
    no_pg = [{**_run(100.0, 15.0), "pg_cpu_ms": None}]
    met, per_mode = budget(_both_modes(no_pg, [_run(100.0, 15.0)]))
    assert not met
    assert all(m.flows_ok and m.cpu == [None] for m in per_mode)
    assert "events off CPU not measured" in budget_lines(met, per_mode, "volchain @ abc1234")[-1]


def test_budget_is_judged_on_the_median_of_same_round_ratios():
    """Three rounds: one bad round (a neighbour's burst) does not decide; the median round does."""
    this = [_run(80.0, 15.0), _run(99.0, 15.0), _run(97.0, 15.0)]
    earlier = [_run(100.0, 15.0), _run(100.0, 15.0), _run(100.0, 15.0)]
    met, per_mode = budget(_both_modes(this, earlier))
    assert met
    assert per_mode[0].flows_median == 0.97
    assert "flows/s 80%, 99%, 97% (median 97%, ok)" in budget_lines(met, per_mode, "x")[1]
