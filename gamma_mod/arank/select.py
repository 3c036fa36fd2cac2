"""Which layers become MoD layers, from a per-layer ARank vector."""

from __future__ import annotations


def select_mod_layers(arank: list[float], strategy: str = "topk_dense", k_dense: int = 4,
                      fraction: float | None = None, layers: list[int] | None = None,
                      keep_first_last_dense: bool = True) -> list[int]:
    """
    topk_dense (paper): `k_dense` layers stay dense, every other layer becomes MoD. The forced
                        dense layers (first and last) count toward `k_dense`; the remaining dense
                        slots go to the highest-ARank layers. On 32-layer Vicuna-7B, k_dense=4 gives
                        the paper's 28 MoD layers (0, 31 forced + the two highest ARank: 1, 2).
    fraction:           the `fraction` of layers with the lowest ARank.
    explicit:           exactly `layers`.
    The first and last layers stay dense unless `keep_first_last_dense=False`; layer 0 is always
    dense in our model (it fixes the KV-cache length and mask for the dense layers).

    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], k_dense=3)
    [1, 3, 4]
    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], k_dense=2)
    [1, 2, 3, 4]
    """
    n = len(arank)
    if strategy == "explicit":
        if not layers:
            raise ValueError("strategy 'explicit' needs `layers`")
        chosen = sorted(set(layers))
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range for {n} layers")
    elif strategy == "topk_dense":
        if not 0 <= k_dense <= n:
            raise ValueError(f"k_dense must be in [0, {n}], got {k_dense}")
        forced = {0, n - 1} if keep_first_last_dense else {0}
        order = [i for i in sorted(range(n), key=lambda i: (-arank[i], i)) if i not in forced]
        dense = forced | set(order[: max(0, k_dense - len(forced))])
        chosen = [i for i in range(n) if i not in dense]
    elif strategy == "fraction":
        if fraction is None or not 0 < fraction <= 1:
            raise ValueError("strategy 'fraction' needs 0 < fraction <= 1")
        order = sorted(range(n), key=lambda i: (arank[i], i))
        chosen = sorted(order[: int(round(fraction * n))])
    else:
        raise ValueError(f"unknown selection strategy {strategy!r} (topk_dense | fraction | explicit)")
    if keep_first_last_dense:
        chosen = [i for i in chosen if i not in (0, n - 1)]
    if 0 in chosen:
        raise ValueError("layer 0 cannot be a MoD layer")
    return chosen
