"""A job's images as shards of seed ranges: every image handed out once, resumed around finished
shards, shards shrinking as the job ends (no Ray needed)."""
from edge_dm.jobs.shards import SeedRanges, Shard, shard_size


def test_seed_ranges_hand_out_every_image_once_and_resume_around_finished_shards():
    todo = SeedRanges(20, done=[Shard(4, 4), Shard(12, 2)])
    assert todo.remaining == 14 and todo.ranges == [[0, 4], [8, 12], [14, 20]]
    shards = []
    while todo.remaining:
        shards.append(todo.take(3))
    assert shards == [Shard(0, 3), Shard(3, 1), Shard(8, 3), Shard(11, 1), Shard(14, 3), Shard(17, 3)]
    todo.give_back(Shard(8, 3))  # its worker died: handed out again, first
    todo.give_back(Shard(11, 1))
    assert todo.ranges == [[8, 12]] and todo.take(10) == Shard(8, 4) and todo.take(1) is None


def test_shards_are_whole_rounds_of_batches_and_shrink_as_the_job_ends():
    assert shard_size(10_000, 4, 32) == 32 * 20  # a quarter of a worker's share, 625, in rounds of 32
    assert shard_size(10_000, 1, 32) == 32 * 32  # at most 32 rounds
    assert shard_size(100, 4, 32) == 32 and shard_size(1, 4, 32) == 32  # never less than a round
    assert shard_size(10_000, 4, 32, fixed=7) == 7
