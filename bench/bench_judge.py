"""Score many windows with the RULER judge against a local judge that answers after a fixed latency.

    python -m bench.bench_judge [--windows 200] [--agents 8] [--latency 0.2] [--concurrency 8] [--repeat 3]

Creates a scratch database on BABYLON_BENCH_ADMIN_URL (default the local server), simulates and
validates the windows, then scores them all with `score_windows` three times:
- outcome judge (no calls): reading the rows' facts (recorded at validation), splitting and storing, target
  under 1 s;
- RULER, cold cache: wall time next to the ideal, calls x latency / concurrency, target at most 1.2x;
- RULER, warm cache: the re-run, which must make no judge call at all, target under 1 s.
The baseline for the last two is the floor of any scoring: one query fetching every window's accepted
rows and parsing them into trajectories. Each figure is the median of `--repeat` runs (the judge cache is
emptied before each cold run). The judge server runs in a process of its own, as a real judge does, so
its CPU is not counted against scoring. The database is dropped afterwards.
"""

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

from pydantic import SecretStr

from babylon_assets.db.connection import connect, connect_async
from babylon_assets.judging.judge import Judge
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.ruler_judge import RulerJudge
from babylon_assets.judging.ruler_settings import RulerSettings
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.reader import parse_recorded
from bench.scratch import scratch_database, store_url
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content
from tests.support.scoring import ScoringReport, score_windows
from tests.support.trajectory_rows import ingest_and_validate

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)


TARGET_COLD_RATIO = 1.2
TARGET_WARM_SECONDS = 1.0


async def _floor(url: str) -> float:
    """Fetch the accepted rows of every window in one query and parse them: what scoring cannot avoid."""
    async with await connect_async(url) as conn:
        started = time.perf_counter()
        cursor = await conn.execute(
            """
            SELECT r.recorded::text FROM trajectory_validations t
            JOIN snapshot_rows r ON r.snapshot_id = t.snapshot_id AND r.source_id = t.source_id WHERE t.accepted
            """
        )
        parsed = [parse_recorded(recorded) for (recorded,) in await cursor.fetchall()]
        elapsed = time.perf_counter() - started
    if not parsed or any(isinstance(item, str) for item in parsed):
        raise SystemExit("the floor's rows did not parse")
    return elapsed


async def _timed(url: str, judge: Judge, window_ids: list[datetime]) -> tuple[float, ScoringReport]:
    async with await connect_async(url, autocommit=True) as conn:
        started = time.perf_counter()
        report = await score_windows(conn, judge, window_ids)
        return time.perf_counter() - started, report


def _serve(latency: float, pipe: Connection) -> None:
    def slow_judge(request: JudgeRequest) -> Reply:
        return by_content(request).model_copy(update={"delay_seconds": latency})

    with JudgeServer(slow_judge) as server:
        pipe.send(server.api_base)
        while pipe.recv() == "counts":
            pipe.send((server.request_count, server.max_in_flight))


class _JudgeProcess:
    def __init__(self, pipe: Connection, api_base: str) -> None:
        self._pipe = pipe
        self.api_base = api_base

    def counts(self) -> tuple[int, int]:
        """Requests the server has seen, and the most it had in flight at once."""
        self._pipe.send("counts")
        requests, peak = self._pipe.recv()
        return int(requests), int(peak)


@contextmanager
def judge_process(latency: float) -> Iterator[_JudgeProcess]:
    """The judge server in a process of its own, as a production judge is: its CPU is not the scorer's
    (in this process it took about 2 s of the cold run's event loop)."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(latency, theirs), daemon=True)
    process.start()
    theirs.close()  # the child's end only: if the child dies, reads here end with EOFError instead of waiting
    try:
        try:
            api_base = str(ours.recv())
        except EOFError:
            process.join(timeout=10)
            raise SystemExit(f"the judge server process exited (code {process.exitcode}) before it served") from None
        yield _JudgeProcess(ours, api_base)
    finally:
        # A dead child cannot be told to stop; telling it would raise BrokenPipeError over the real error.
        if process.is_alive():
            ours.send("stop")
            process.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the judge takes per answer")
    parser.add_argument("--concurrency", type=int, default=8, help="judge requests in flight at once")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with scratch_database() as game_url:
        simulate(game_url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW)
        window_ids = [FIRST_WINDOW + timedelta(hours=hour) for hour in range(args.windows)]
        url = store_url(game_url)
        asyncio.run(ingest_and_validate(game_url, url, window_ids, min_actions=1))

        with judge_process(args.latency) as server:
            judge = RulerJudge(
                RulerSettings(
                    judge_model="openai/bench-judge",
                    api_base=server.api_base,
                    api_key=SecretStr("bench"),
                    max_concurrency=args.concurrency,
                    timeout_seconds=30.0,
                )
            )
            outcome = OutcomeJudge(group_size=judge.group_size)
            floor = statistics.median(asyncio.run(_floor(url)) for _ in range(args.repeat))
            outcome_wall = statistics.median(
                asyncio.run(_timed(url, outcome, window_ids))[0] for _ in range(args.repeat)
            )
            cold_walls: list[float] = []
            for _ in range(args.repeat):
                with connect(url, autocommit=True) as conn:
                    conn.execute("DELETE FROM judge_cache")
                before, _ = server.counts()
                cold_wall, cold = asyncio.run(_timed(url, judge, window_ids))
                cold_walls.append(cold_wall)
                requests = server.counts()[0] - before
            cold_wall = statistics.median(cold_walls)
            before, peak = server.counts()
            warm_runs = [asyncio.run(_timed(url, judge, window_ids)) for _ in range(args.repeat)]
            warm_wall, warm = statistics.median(wall for wall, _ in warm_runs), warm_runs[-1][1]
            warm_requests = server.counts()[0] - before

        calls = sum(scoring.stats.calls_made for scoring in cold.scored)
        warm_calls = sum(scoring.stats.calls_made for scoring in warm.scored)
        cached = sum(scoring.stats.calls_cached for scoring in warm.scored)
        ideal = calls * args.latency / args.concurrency
        print(
            f"{args.windows} windows x {args.agents} agents, judge latency {args.latency * 1000:.0f} ms, "
            f"medians of {args.repeat}"
        )
        print(f"baseline: fetch + parse all: {floor:7.2f} s  (one query for every window's accepted rows)")
        print(
            f"outcome judge (no calls)   : {outcome_wall:7.2f} s  (facts, split, store; {outcome_wall / floor:.1f}x "
            f"baseline; target < {TARGET_WARM_SECONDS:g} s)"
        )
        print(
            f"RULER cold cache           : {cold_wall:7.2f} s  for {calls} calls "
            f"(server saw {requests}, peak {peak} in flight)"
        )
        print(
            f"ideal calls x latency / concurrency : {ideal:7.2f} s  "
            f"({calls} x {args.latency:.3f} s / {args.concurrency}); cold is {cold_wall / ideal:.2f}x ideal "
            f"(target <= {TARGET_COLD_RATIO:g}x)"
        )
        print(
            f"RULER warm cache (re-run)  : {warm_wall:7.2f} s  ({warm_calls} calls, {cached} answers from cache; "
            f"{warm_wall / floor:.1f}x baseline; target < {TARGET_WARM_SECONDS:g} s)"
        )
        if warm_calls or warm_requests or requests != calls:
            raise SystemExit("the warm re-run reached the judge: the cache is broken")


if __name__ == "__main__":
    main()
