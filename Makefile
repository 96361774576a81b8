# Everyday commands; CI (.ci/run) runs `lint` and the README's test command.
.PHONY: test lint format bench bench-quick

test:
	python -m pytest

lint:
	ruff check .
	mypy

format:
	ruff check --fix .

# Timings: run alone on a quiet machine (they write bench/results/).
bench:
	python -m pytest bench

# The benchmarks as a quick correctness pass, small sizes, no timing (what CI runs).
bench-quick:
	PRUNENET_RSS_BENCH_GB=0.05 PRUNENET_BENCH_SHAPE=2,96,40 PRUNENET_BENCH_EPISODES=2 PRUNENET_FARM_BENCH_SIZE=1,2 PRUNENET_PROBE_BENCH_MODEL=tiny \
	  python -m pytest bench --benchmark-disable -q
