"""Does training make the agent better? SmolLM2-135M trained on judged simulated windows, then played.

    python -m bench.bench_learning [--windows 6] [--steps 3] [--windows-per-step 2] [--markets 4]
        [--decisions 4] [--learning-rate 2e-4] [--max-seq-len 1024] [--threads 1]

On a scratch database (BABYLON_BENCH_ADMIN_URL, default the local server): simulate windows of 5 agents,
validate them, score them with the outcome judge, and train SmolLM2-135M-Instruct (LoRA) for --steps
steps. As a control, train a second model on the same trajectories with each window's scores shuffled.
Then the base model, both trained policies and the scripted strategies play the same --markets unseen
simulated markets (closed-loop `evaluate_checkpoint`). One table: policy, mean P&L and its paired 95% CI
against the base, win rate against the base, invalid-reply rate, held-out margin before/after, and the
wall time of each phase; then the paired tests trained > base and trained > shuffled control.
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

import torch

from babylon_assets.db.connection import connect, connect_async
from babylon_assets.evaluation.evaluate import EvaluationSettings, PolicyScore, evaluate_checkpoint, paired_comparison
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.scoring import score_windows
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.train import train_policy
from babylon_assets.training.types import SMOLLM2_BASE_MODEL, TrainingResult
from babylon_assets.trajectories.simulate import simulate
from babylon_assets.trajectories.validation import validate_window
from bench.scratch import scratch_database
from resources.trainer import TrainerResource
from resources.wandb import WandbResource

AGENTS = 5


async def _validate_and_score(url: str, window_ids: list[str]) -> None:
    ids = [datetime.fromisoformat(key).replace(tzinfo=UTC) for key in window_ids]
    async with await connect_async(url, autocommit=True) as conn:
        for window_id in ids:
            await validate_window(conn, window_id, min_actions=1)
        await score_windows(conn, OutcomeJudge(), ids)


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
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--windows-per-step", type=int, default=2)
    parser.add_argument("--markets", type=int, default=4)
    parser.add_argument("--decisions", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-seq-len", type=int, default=1024)
    # Logits of 49152-token vocabulary rows dominate memory: 8192 tokens per batch took 21 GB here.
    parser.add_argument("--tokens-per-batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    phases: dict[str, float] = {}
    home = Path(tempfile.mkdtemp(prefix="babylon-bench-learning-"))
    models_root = home / "models"

    def trainer(name: str) -> TrainerResource:
        return TrainerResource(
            model_name=name,
            base_model=SMOLLM2_BASE_MODEL,
            lora=True,
            threads=args.threads,
            max_seq_len=args.max_seq_len,
            tokens_per_batch=args.tokens_per_batch,
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
    with scratch_database() as url:
        started = time.perf_counter()
        summary = simulate(url, agents=AGENTS, windows=args.windows, seed=args.seed, steps_range=(5, 6))
        asyncio.run(_validate_and_score(url, summary.windows))
        phases["simulate+judge"] = time.perf_counter() - started
        print(f"simulated and judged {len(summary.windows)} windows", file=sys.stderr, flush=True)

        started = time.perf_counter()
        trained = train_policy(url, trainer("bench-trained").build(), wandb, config)
        phases["train"] = time.perf_counter() - started
        print(f"trained {trained.steps_done} step(s) in {phases['train']:.0f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        _shuffle_scores(url, args.seed)
        control = train_policy(url, trainer("bench-shuffled").build(), wandb, config)
        phases["train control"] = time.perf_counter() - started
        print(f"trained the control in {phases['train control']:.0f} s", file=sys.stderr, flush=True)

        settings = EvaluationSettings(
            markets=args.markets, seed=args.seed, decisions=args.decisions, max_new_tokens=args.max_new_tokens
        )
        started = time.perf_counter()
        first = evaluate_checkpoint(url, "bench-trained", None, settings, models_root=models_root)
        second = evaluate_checkpoint(url, "bench-shuffled", None, settings, models_root=models_root)
        phases["evaluate"] = time.perf_counter() - started

    rows: list[tuple[str, PolicyScore, TrainingResult | None]] = [
        ("base SmolLM2-135M", first.score("base"), None),
        ("trained (judge scores)", first.score("checkpoint"), trained),
        ("control (shuffled scores)", second.score("checkpoint"), control),
        *((score.policy, score, None) for score in first.policies if score.policy.startswith("scripted:")),
    ]
    print(
        f"{args.windows} windows x {AGENTS} agents (outcome judge), {args.steps} LoRA steps x {args.windows_per_step} "
        f"windows, lr {args.learning_rate}, max_seq_len {args.max_seq_len}, {args.threads} thread(s); "
        f"{args.markets} unseen markets x {args.decisions} decisions, max {args.max_new_tokens} new tokens"
    )
    print(
        "| policy | mean P&L | vs base (95% CI) | win rate vs base | invalid replies | margin before -> after | tok/s |"
    )
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
    trained_pnls = first.score("checkpoint").market_pnls
    for label, reference in (
        ("trained > base", first.score("base").market_pnls),
        ("trained > shuffled control", second.score("checkpoint").market_pnls),
    ):
        test = paired_comparison(trained_pnls, reference)
        print(f"{label}: mean difference {test.mean_difference:+.2f}, one-sided paired p = {test.p_value:.3f}")
    print("wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items()))


if __name__ == "__main__":
    main()
