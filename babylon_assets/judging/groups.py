"""How a window is cut into judge groups and in which orders a group is shown to the judge.

Both are pure functions of the trajectory ids, so re-scoring a window reproduces the same groups
and the same prompts (and so hits the judge cache).
"""

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Member(Protocol):
    """What a split needs of a group member: a trajectory or only its row's identity."""

    @property
    def trajectory_id(self) -> str: ...

    @property
    def agent_id(self) -> str: ...


M = TypeVar("M", bound=Member)


def _id_hash(trajectory_id: str) -> str:
    return hashlib.sha256(trajectory_id.encode()).hexdigest()


def split_groups(trajectories: Sequence[M], group_size: int) -> list[list[M]]:
    """Balanced groups of at most `group_size`, their sizes differing by at most one.

    Trajectories are ordered by a hash of their id, so the split does not depend on the order rows
    were read in, and agents are not grouped by name.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    ordered = sorted(trajectories, key=lambda trajectory: _id_hash(trajectory.trajectory_id))
    count = math.ceil(len(ordered) / group_size)
    base, extra = divmod(len(ordered), count) if count else (0, 0)
    groups: list[list[M]] = []
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        groups.append(ordered[start : start + size])
        start += size
    return groups


def permutation_orders(trajectory_ids: Sequence[str], count: int) -> list[list[int]]:
    """Up to `count` orders (indices into `trajectory_ids`) to show a group in, in which every trajectory
    takes a different position in each order.

    The orders are cyclic shifts of one seeded shuffle, spread evenly over the group: order k shows at
    position p the trajectory at (p + shift_k) mod n of the shuffle, so no trajectory keeps its position
    from one order to another (a reverse would leave the middle of an odd group in place, with no control
    of the judge's position bias). A group of n has only n such orders; with n of them every trajectory
    takes every position once.
    """
    if count < 1:
        raise ValueError(f"the number of permutations must be at least 1, got {count}")
    size = len(trajectory_ids)
    wanted = min(count, size)
    seed = int(_id_hash("\n".join(trajectory_ids))[:16], 16)
    shuffled = list(range(size))
    random.Random(seed).shuffle(shuffled)
    shifts = [index * size // wanted for index in range(wanted)]
    return [[shuffled[(position + shift) % size] for position in range(size)] for shift in shifts]
