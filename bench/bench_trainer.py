"""Torch trainer throughput and peak memory on the tiny model, next to a plain forward/backward loop.

Both run over the same token batches (same packing, same model, same AdamW and grad clipping), each
in a fresh process so that peak RSS is each phase's own. The trainer's time includes what it does
beyond the plain loop: chat encoding, advantage and weight normalisation, and the atomic checkpoint.

    python -m bench.bench_trainer [--steps 3] [--groups 4] [--group-size 4] [--max-seq-len 1024]
"""

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from babylon_assets.training import metric_names
from babylon_assets.training.grpo import batch_tensors, group_advantages, normalize_items, pack_batches
from babylon_assets.training.hf_policy import encode_chat
from babylon_assets.training.torch_backend import ADAM_BETAS, TorchTrainer
from babylon_assets.training.types import PolicySpec, ScoredGroup, TorchSettings
from babylon_assets.trajectories.messages import ChatMessage
from tests.support.training import WINDOW, scored_trajectory


class Workload(BaseModel):
    steps: int
    groups: int
    group_size: int
    max_seq_len: int


class Measurement(BaseModel):
    name: str
    tokens: int
    seconds: float
    setup_rss_mib: float
    peak_rss_mib: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _groups(workload: Workload) -> list[ScoredGroup]:
    groups = []
    for group_index in range(workload.groups):
        trajectories = []
        for member in range(workload.group_size):
            turns = [ChatMessage(role="system", content="You are a careful trader in the Babylon markets. " * 4)]
            for turn in range(6):
                turns.append(
                    ChatMessage(role="user", content=f"Minute {turn}: BABY at {100 + turn}.5, news mixed. " * 3)
                )
                turns.append(ChatMessage(role="assistant", content=f'{{"action": "BUY", "size": {member + turn}}}'))
            score = member / (workload.group_size - 1)
            trajectories.append(scored_trajectory(f"g{group_index}-t{member}", score, turns, group_index=group_index))
        groups.append(ScoredGroup(window_id=WINDOW, group_index=group_index, trajectories=trajectories))
    return groups


def _trainer(workload: Workload, root: Path) -> TorchTrainer:
    return TorchTrainer(
        PolicySpec(name="bench", base_model="tiny", project="bench", backend="torch"),
        TorchSettings(max_seq_len=workload.max_seq_len),
        checkpoint_root=root / "checkpoints",
        models_root=root / "models",
    )


def measure_trainer(workload: Workload) -> Measurement:
    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(workload, Path(folder))
        groups = _groups(workload)
        trainer.train_step(groups, step=1, learning_rate=1e-4, seed=0)  # warm-up
        setup = _peak_rss_mib()
        tokens = 0
        started = time.perf_counter()
        for step in range(2, workload.steps + 2):
            outcome = trainer.train_step(groups, step=step, learning_rate=1e-4, seed=0)
            tokens += int(outcome.metrics[metric_names.TOKENS])
        seconds = time.perf_counter() - started
    return Measurement(
        name="torch trainer", tokens=tokens, seconds=seconds, setup_rss_mib=setup, peak_rss_mib=_peak_rss_mib()
    )


def measure_plain_loop(workload: Workload) -> Measurement:
    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(workload, Path(folder))
        model, tokenizer = trainer.model, trainer.tokenizer
        candidates = []
        for group in _groups(workload):
            advantages = group_advantages([t.score for t in group.trajectories])
            for trajectory, advantage in zip(group.trajectories, advantages, strict=True):
                candidates.append(
                    (
                        trajectory.trajectory_id,
                        encode_chat(tokenizer, trajectory.messages, workload.max_seq_len),
                        advantage,
                    )
                )
        # The trainer also trains only non-zero-advantage trajectories: the same token batches.
        settings = TorchSettings(max_seq_len=workload.max_seq_len)
        batches = [
            batch_tensors(batch, trainer.pad_token_id())
            for batch in pack_batches(normalize_items(candidates), settings.tokens_per_batch)
        ]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=ADAM_BETAS, weight_decay=settings.weight_decay)

        def one_pass() -> int:
            count = 0
            for batch in batches:
                logits = model(input_ids=batch.token_ids, attention_mask=batch.attention_mask).logits
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), batch.token_ids[:, 1:].reshape(-1)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                count += int(batch.attention_mask.sum())
            return count

        one_pass()  # warm-up
        setup = _peak_rss_mib()
        tokens = 0
        started = time.perf_counter()
        for _ in range(workload.steps):
            tokens += one_pass()
        seconds = time.perf_counter() - started
    return Measurement(
        name="plain fwd+bwd", tokens=tokens, seconds=seconds, setup_rss_mib=setup, peak_rss_mib=_peak_rss_mib()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=1024)
    args = parser.parse_args()
    workload = Workload(steps=args.steps, groups=args.groups, group_size=args.group_size, max_seq_len=args.max_seq_len)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        plain = pool.apply(measure_plain_loop, (workload,))
    with context.Pool(1, maxtasksperchild=1) as pool:
        ours = pool.apply(measure_trainer, (workload,))
    print(
        f"workload: {workload.groups} groups x {workload.group_size} trajectories, max_seq_len {workload.max_seq_len}, "
        f"{workload.steps} timed steps, tiny model, torch threads as default"
    )
    print(f"{'':16}{'tokens/s':>12}{'tokens':>10}{'seconds':>10}{'RSS after warm-up':>20}{'peak RSS':>12}")
    for item in (plain, ours):
        print(
            f"{item.name:16}{item.tokens_per_second:>12.0f}{item.tokens:>10}{item.seconds:>10.2f}"
            f"{item.setup_rss_mib:>16.0f} MiB{item.peak_rss_mib:>8.0f} MiB"
        )
    print(
        f"overhead: the trainer takes {plain.tokens_per_second / ours.tokens_per_second:.2f}x the plain loop's time "
        f"per token; peak RSS {ours.peak_rss_mib - plain.peak_rss_mib:+.0f} MiB"
    )


if __name__ == "__main__":
    main()
