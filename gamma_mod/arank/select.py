"""Which decoder layers become MoD layers, from a per-layer ARank vector (low ARank = redundant)."""

from __future__ import annotations

# Layer selections (which layers become MoD); not to be confused with routing strategies (gamma_mod.mod.strategies).
LAYER_SELECTIONS = ("topk_dense", "fraction", "explicit")


def select_mod_layers(arank: list[float], selection: str = "topk_dense", k_dense: int = 4,
                      fraction: float | None = None, layers: list[int] | None = None,
                      keep_first_last_dense: bool = True) -> list[int]:
    """Sorted indices of the layers to convert.

    topk_dense (paper): `k_dense` layers stay dense, every other layer becomes MoD. The forced
        dense layers (see below) count toward `k_dense`; the remaining dense slots go to the
        highest-ARank layers (ties: the lower index stays dense). On 32-layer Vicuna-7B, k_dense=4
        gives the paper's 28 MoD layers (0 and 31 forced, plus the two highest ARank, 1 and 2).
        If k_dense is smaller than the forced count, only the forced layers stay dense.
    fraction: round(fraction * n_layers) layers with the lowest ARank become MoD, chosen among the
        layers allowed to be MoD (so the count is what was asked, capped by how many are allowed).
    explicit: exactly `layers` (ARank unused); a forced-dense layer in the list is an error, not
        silently dropped.

    Forced dense: layer 0 ALWAYS — our MoD config rejects it (it fixes the KV-cache length and the
    causal mask every later dense layer sees). The last layer too unless
    `keep_first_last_dense=False` (it writes the final hidden state of every token).

    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], k_dense=3)     # dense: 0, 5 forced + 2
    [1, 3, 4]
    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], k_dense=2)     # dense: 0, 5
    [1, 2, 3, 4]
    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], k_dense=2, keep_first_last_dense=False)
    [1, 3, 4, 5]
    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], "fraction", fraction=0.5)  # 3 lowest of 1..4
    [1, 3, 4]
    >>> select_mod_layers([9.0, 3.0, 8.0, 2.0, 1.0, 7.0], "explicit", layers=[4, 2])
    [2, 4]
    """
    n = len(arank)
    if n < 1:
        raise ValueError("empty ARank vector")
    forced = {0, n - 1} if keep_first_last_dense else {0}
    allowed = [i for i in range(n) if i not in forced]
    if selection == "explicit":
        if not layers:
            raise ValueError("selection 'explicit' needs `layers`")
        chosen = sorted(set(layers))
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range for {n} layers")
        if 0 in chosen:
            raise ValueError("layer 0 cannot be a MoD layer (the MoD config requires it dense)")
        if n - 1 in chosen and keep_first_last_dense:
            raise ValueError(f"layer {n - 1} is the last layer, kept dense; pass keep_first_last_dense=False "
                             "(CLI: --allow-last) to convert it")
        return chosen
    if selection == "topk_dense":
        if not 0 <= k_dense <= n:
            raise ValueError(f"k_dense must be in [0, {n}], got {k_dense}")
        by_rank = sorted(allowed, key=lambda i: (-arank[i], i))  # highest ARank first
        dense = forced | set(by_rank[: max(0, k_dense - len(forced))])
        return [i for i in range(n) if i not in dense]
    if selection == "fraction":
        if fraction is None or not 0 < fraction <= 1:
            raise ValueError(f"selection 'fraction' needs 0 < fraction <= 1, got {fraction}")
        by_rank = sorted(allowed, key=lambda i: (arank[i], i))  # lowest ARank first
        return sorted(by_rank[: int(round(fraction * n))])
    raise ValueError(f"unknown layer selection {selection!r} ({' | '.join(LAYER_SELECTIONS)})")
