"""Does training make the agent better? SmolLM2-135M trained on judged simulated windows, then played.

    python -m bench.bench_learning [--judge outcome|local-llm] [--windows 5] [--steps 3]
        [--windows-per-step 1] [--markets 6] [--decisions 2] [--learning-rate 2e-4] [--max-seq-len 1024]
        [--decoding json-schema|free] [--threads 1]

On a scratch database (BABYLON_BENCH_ADMIN_URL, default the local server): simulate windows of 5 agents,
validate them, score them with the outcome judge and, with `--judge local-llm`, then with the RULER judge
through an xllamacpp server of SmolLM2-135M (the production RULER path: LiteLLM, pinned schema, cache),
whose scores the training uses; the judges' Kendall tau with the realized P&L is printed side by side.
Train SmolLM2-135M-Instruct (LoRA) for --steps steps; as a control, train a second model on the same
trajectories with each window's scores shuffled. Then the base model, both trained policies and the
scripted strategies play the same --markets unseen simulated markets (closed-loop). One table: policy,
mean P&L and its paired 95% CI against the base, win rate against the base, invalid-reply rate, held-out
margin before/after; the wall time of each phase; the paired tests trained > base and trained > control.
The defaults took 16 minutes on 2 busy shared cores (README, Benchmarks).
"""

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Literal, get_args

import torch

from babylon_assets.db.connection import connect, connect_async
from babylon_assets.evaluation.evaluate import (
    CHECKPOINT,
    PolicyScore,
    evaluate_checkpoint,
    load_checkpoint_policy,
    model_score,
    paired_comparison,
    play_policy,
)
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.judging.judge import Judge
from babylon_assets.judging.local_llm import local_judge_server, local_ruler_settings
from babylon_assets.judging.local_settings import LocalJudgeSettings
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.quality import measure_judge_quality
from babylon_assets.judging.ruler_judge import RulerJudge
from babylon_assets.simulation.writer import simulate
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.hf_policy import resolve_base_model
from babylon_assets.training.train import train_policy
from babylon_assets.training.types import SMOLLM2_BASE_MODEL, TrainingResult
from babylon_assets.trajectories.ingest import ingest_window
from babylon_assets.trajectories.validation import validate_window
from bench.scratch import scratch_database, store_url
from resources.trainer import TorchConfig, TrainerResource
from resources.wandb import WandbResource
from tests.support.scoring import score_windows

AGENTS = 5
JudgeChoice = Literal["outcome", "local-llm"]


async def _ingest_and_validate(game_url: str, url: str, window_ids: list[datetime]) -> None:
    """raw_trajectories then validated_windows, as the pipeline runs them."""
    async with (
        await connect_async(game_url) as game,
        await connect_async(url) as store,
        await connect_async(url, autocommit=True) as verdicts,
    ):
        for window_id in window_ids:
            await ingest_window(game, store, window_id)
            await validate_window(verdicts, window_id, min_actions=1)


async def _score(url: str, judge: Judge, window_ids: list[datetime]) -> float | None:
    """Score the windows (replacing earlier scores); the judge's mean Kendall tau with the realized P&L."""
    async with await connect_async(url, autocommit=True) as conn:
        # A 135M judge on busy cores takes minutes per call: no deadline short of the bench's own budget.
        await score_windows(conn, judge, window_ids, max_windows=1, deadline_seconds=1800)
        taus = [(await measure_judge_quality(conn, w, judge=judge.name)).score_pnl_tau for w in window_ids]
    measured = [tau for tau in taus if tau is not None]
    return fmean(measured) if measured else None


def _tau(value: float | None) -> str:
    return "none" if value is None else f"{value:+.2f}"


def _shuffle_scores(url: str, seed: int) -> None:
    """Each window's scores permuted among its trajectories: same data, no signal."""
    rng = random.Random(seed)
    with connect(url) as conn, conn.transaction():
        rows = conn.execute("SELECT window_id, trajectory_id, score FROM trajectory_scores ORDER BY 1, 2").fetchall()
        by_window: dict[object, list[tuple[str, float]]] = {}
        for window_id, trajectory_id, score in rows:
            by_window.setdefault(window_id, []).append((trajectory_id, score))
        for members in by_window.values():
            scores = [score for _, score in members]
            shuffled = scores[:]
            while len(set(scores)) > 1 and shuffled == scores:
                rng.shuffle(shuffled)
            conn.cursor().executemany(
                "UPDATE trajectory_scores SET score = %s WHERE trajectory_id = %s",
                [(score, trajectory_id) for (trajectory_id, _), score in zip(members, shuffled, strict=True)],
            )


def _margin(value: float | None) -> str:
    return "none" if value is None else f"{value:+.4f}"


HEADER = (
    "| policy | mean P&L | vs base (95% CI) | win rate vs base | invalid replies | margin before -> after | tok/s |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--judge", choices=["outcome", "local-llm"], default="outcome")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--windows-per-step", type=int, default=1)
    parser.add_argument("--markets", type=int, default=6)
    parser.add_argument("--decisions", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=EvaluationSettings().max_new_tokens)
    decodings = get_args(EvaluationSettings.model_fields["decoding"].annotation)
    parser.add_argument("--decoding", choices=decodings, default=EvaluationSettings().decoding)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    # The first turn (persona, market, action format, reply) is 680-790 SmolLM2 tokens: a shorter limit
    # leaves no assistant token to train on.
    parser.add_argument("--max-seq-len", type=int, default=1024)
    # Logits of 49152-token vocabulary rows dominate memory: 8192 tokens per batch took 21 GB here.
    parser.add_argument("--tokens-per-batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    judge_choice: JudgeChoice = args.judge
    torch.set_num_threads(args.threads)
    phases: dict[str, float] = {}
    home = Path(tempfile.mkdtemp(prefix="babylon-bench-learning-"))
    models_root = home / "models"

    def trainer(name: str) -> TrainerResource:
        return TrainerResource(
            model_name=name,
            base_model=SMOLLM2_BASE_MODEL,
            torch=TorchConfig(
                lora=True, threads=args.threads, max_seq_len=args.max_seq_len, tokens_per_batch=args.tokens_per_batch
            ),
            checkpoint_root=str(home / "checkpoints"),
        )

    config = TrainingConfig(
        iterations=args.steps,
        windows_per_iteration=args.windows_per_step,
        learning_rate=args.learning_rate,
        min_actions=1,
        held_out_fraction=0.2,
        seed=args.seed,
    )
    wandb = WandbResource(directory=str(home / "wandb"), project="babylon-bench")
    os.environ["BABYLON_HOME"] = str(home)
    taus: dict[str, float | None] = {}
    with scratch_database() as game_url:
        url = store_url(game_url)
        started = time.perf_counter()
        summary = simulate(game_url, agents=AGENTS, windows=args.windows, seed=args.seed, steps_range=(5, 6))
        window_ids = [datetime.fromisoformat(key).replace(tzinfo=UTC) for key in summary.windows]
        asyncio.run(_ingest_and_validate(game_url, url, window_ids))
        taus["outcome"] = asyncio.run(_score(url, OutcomeJudge(), window_ids))
        phases["simulate+outcome judge"] = time.perf_counter() - started
        if judge_choice == "local-llm":
            started = time.perf_counter()
            local = LocalJudgeSettings(threads=args.threads)
            with local_judge_server(local) as server:
                # One order per group: a second doubles the judging time; agreement across orders is then
                # not measured.
                ruler = RulerJudge(local_ruler_settings(server, local).model_copy(update={"permutations": 1}))
                taus[ruler.name] = asyncio.run(_score(url, ruler, window_ids))
            phases["RULER judge (xllamacpp)"] = time.perf_counter() - started
        print(f"simulated and judged {len(window_ids)} windows", file=sys.stderr, flush=True)

        started = time.perf_counter()
        trained = train_policy(url, trainer("bench-trained").build(), wandb, config, datetime.now(UTC))
        phases["train"] = time.perf_counter() - started
        print(f"trained {trained.steps_done} step(s) in {phases['train']:.0f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        _shuffle_scores(url, args.seed)
        control = train_policy(url, trainer("bench-shuffled").build(), wandb, config, datetime.now(UTC))
        phases["train control"] = time.perf_counter() - started
        print(f"trained the control in {phases['train control']:.0f} s", file=sys.stderr, flush=True)

        settings = EvaluationSettings(
            markets=args.markets,
            seed=args.seed,
            decisions=args.decisions,
            max_new_tokens=args.max_new_tokens,
            decoding=args.decoding,
        )
        started = time.perf_counter()
        # Base, trained and scripted strategies (stored like `babylon evaluate`), then the control on the
        # same markets.
        evaluation = evaluate_checkpoint(url, "bench-trained", None, settings, models_root=models_root)
        base_path = resolve_base_model(SMOLLM2_BASE_MODEL, models_root)
        base_pnls = evaluation.score("base").market_pnls
        control_episodes = play_policy(
            load_checkpoint_policy(base_path, Path(control.checkpoint_path)), base_path, settings
        )
        control_score = model_score(CHECKPOINT, None, control_episodes, base_pnls)
        phases["evaluate"] = time.perf_counter() - started

    trained_score = evaluation.score(CHECKPOINT)
    rows: list[tuple[str, PolicyScore, TrainingResult | None]] = [
        ("base SmolLM2-135M", evaluation.score("base"), None),
        (f"trained ({judge_choice} judge scores)", trained_score, trained),
        ("control (shuffled scores)", control_score, control),
        *((score.policy, score, None) for score in evaluation.policies if score.policy.startswith("scripted:")),
    ]
    print(
        f"{args.windows} windows x {AGENTS} agents ({judge_choice} judge), {args.steps} LoRA steps x "
        f"{args.windows_per_step} window(s), lr {args.learning_rate}, max_seq_len {args.max_seq_len}, "
        f"{args.threads} thread(s); {args.markets} unseen markets x {args.decisions} decisions, "
        f"max {args.max_new_tokens} new tokens, {args.decoding} decoding, seed {args.seed}"
    )
    agreement = ", ".join(f"{judge} {_tau(tau)}" for judge, tau in taus.items())
    print(f"judge vs realized P&L (mean Kendall tau over windows): {agreement}")
    print(HEADER)
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, score, training in rows:
        comparison = score.vs_base
        versus = win = ""
        if comparison is not None:
            interval = "" if comparison.ci_low is None else f" [{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}]"
            versus, win = f"{comparison.mean_difference:+.2f}{interval}", f"{comparison.win_rate:.2f}"
        invalid = "" if score.invalid_rate is None else f"{score.invalid_rate:.2f}"
        margin = (
            ""
            if training is None
            else f"{_margin(training.eval_margin_before)} -> {_margin(training.eval_margin_after)}"
        )
        speed = "" if score.tokens_per_second is None else f"{score.tokens_per_second:.1f}"
        print(f"| {name} | {score.mean_pnl:+.2f} | {versus} | {win} | {invalid} | {margin} | {speed} |")
    for label, reference in (("trained > base", base_pnls), ("trained > shuffled control", control_score.market_pnls)):
        test = paired_comparison(trained_score.market_pnls, reference)
        print(f"{label}: mean difference {test.mean_difference:+.2f}, one-sided paired p = {test.p_value:.3f}")
    # What each model actually wrote, so an invalid rate or a tie can be read, not guessed.
    for name, score, _ in rows[:3]:
        print(f"first reply, {name}: {score.sample_reply!r}")
    print("wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items()))


if __name__ == "__main__":
    main()
