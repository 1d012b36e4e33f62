"""GroupedResidualQuantizer: G independent residual quantizers over the slices of D, one state update."""

from __future__ import annotations

import pytest
import torch

import fastrq


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kwargs", [dict(), dict(dead_code_threshold=2.0), dict(ema=False), dict(rotation_trick=True)])
def test_grouped_equals_independent_quantizers(kwargs):
    """Group g with its codebooks copied into a plain ResidualQuantizer: same codes, outputs, loss and state after
    several training steps (restarts draw from different random streams per group: compared at the first step)."""
    torch.manual_seed(0)
    grouped = fastrq.GroupedResidualQuantizer(8, 16, 3, groups=2, decay=0.8, **kwargs)
    singles = []
    for g in range(2):
        single = fastrq.ResidualQuantizer(4, 16, 3, decay=0.8, **kwargs)
        with torch.no_grad():
            single.codebook.copy_(grouped.codebook[3 * g : 3 * g + 3])
            single.cluster_size.copy_(grouped.cluster_size[3 * g : 3 * g + 3])
            if single.ema:
                single.embed_sum.copy_(grouped.embed_sum[3 * g : 3 * g + 3])
        singles.append(single)
    for step in range(1 if kwargs.get("dead_code_threshold") else 3):
        x = _rand(step, 5, 6, 8)
        q, codes, loss = grouped(x)
        assert codes.shape == (5, 6, 2, 3)
        total = 0.0
        for g, single in enumerate(singles):
            qs, cs, ls = single(x[..., 4 * g : 4 * g + 4])
            assert torch.equal(codes[..., g, :], cs)
            torch.testing.assert_close(q[..., 4 * g : 4 * g + 4], qs)
            total = total + ls
            if not kwargs.get("dead_code_threshold"):
                torch.testing.assert_close(grouped.codebook[3 * g : 3 * g + 3], single.codebook, rtol=1e-6, atol=1e-7)
                torch.testing.assert_close(grouped.cluster_size[3 * g : 3 * g + 3], single.cluster_size)
        torch.testing.assert_close(loss, total)


def test_grouped_encode_decode_mask_and_get_codes():
    grq = fastrq.GroupedResidualQuantizer(8, 16, 3, groups=4).eval()
    x = _rand(0, 7, 8)
    mask = torch.arange(7) != 2
    codes = grq.encode(x, mask=mask)
    assert codes.shape == (7, 4, 3) and torch.all(codes[2] == -1)
    q, codes2, _ = grq(x, mask=mask)
    assert torch.equal(codes, codes2) and torch.equal(q[2], x[2])
    torch.testing.assert_close(q[mask], grq.decode(codes)[mask])
    assert grq.get_codes(codes).shape == (7, 4, 3, 2)
    torch.testing.assert_close(grq.get_codes(codes).sum(-2).reshape(7, 8)[mask], q[mask])
    with pytest.raises(fastrq.ShapeError, match="G=4"):
        grq.decode(codes[:, :2])


def test_grouped_kmeans_and_stats_shapes():
    torch.manual_seed(0)
    grq = fastrq.GroupedResidualQuantizer(6, 8, 2, groups=3, kmeans_init=True, loss_per_level=True)
    q, codes, loss, stats = grq(_rand(0, 64, 6), return_stats=True)
    assert bool(grq.initted) and loss.shape == (3, 2)
    assert all(v.shape == (3, 2) for v in stats.values())


def test_grouped_argument_errors():
    with pytest.raises(fastrq.InvalidArgumentError, match="divide"):
        fastrq.GroupedResidualQuantizer(8, 16, 2, groups=3)
    with pytest.raises(fastrq.InvalidArgumentError, match="shared_codebook"):
        fastrq.GroupedResidualQuantizer(8, 16, 2, groups=2, shared_codebook=True)
