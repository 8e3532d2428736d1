"""bench/chain_throughput.py: the same-round ratios pair each round's runs, in order."""

from bench.chain_throughput import round_ratios


def _runs(*rates):
    return [{"flows_per_s": rate} for rate in rates]


def test_same_round_ratios_pair_runs_of_the_same_round():
    results = {("volchain", False): _runs(50.0, 90.0), ("noop", False): _runs(100.0, 150.0),
               ("volchain", True): _runs(40.0), ("noop", True): _runs(80.0)}
    assert round_ratios(results, "volchain", "noop", False) == [50.0, 60.0]
    assert round_ratios(results, "volchain", "noop", True) == [50.0]


def test_same_round_ratios_are_empty_without_the_baseline():
    results = {("volchain", False): _runs(50.0)}
    assert round_ratios(results, "volchain", "floor", False) == []
