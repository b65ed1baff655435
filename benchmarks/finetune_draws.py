"""The random draws of a fine-tuning step, recorded from one implementation and replayed into the other.

With augmentation on, a fine-tuning step of CellPLM draws, in this order: the cells kept by cell dropping (and the
order the model sees them in), the cells chosen for masking, the masked gene entries of those cells, then one
dropout mask per dropout call of the forward pass (embedder, each Flowformer layer's attention output, residual and
feed-forward dropouts, the annotation head). Nothing else in a step is random.

- ``record_ours()`` / ``record_upstream()`` capture every draw of a genuine run, without changing what the run
  draws: the recorder consumes the random streams exactly as the run does (ours: :meth:`Dropout.keep_mask` and
  :meth:`CellPLM.mask` are wrapped, not replaced; upstream: ``nn.Dropout`` is replaced by the same Bernoulli draw
  ATen's CPU dropout makes, :func:`check_upstream_dropout` proves it identical, and ``MaskBuilder.apply_mask`` runs
  as released while its ``torch.randperm``, ``np.random.permutation`` and ``torch.rand`` results are read).
- ``replay_into_upstream(steps)`` / ``replay_into_ours(steps)`` make the other implementation use those draws:
  upstream's own ``drop_nodes`` and ``simple_mask`` run on the recorded permutations and uniform numbers; our
  ``CellPLM.mask`` selects the recorded cells and hides the recorded entries; every dropout call takes the recorded
  mask, after checking that the call has the same shape and rate.
- :func:`draw_statistics` compares the draws of two genuine runs: counts that must be equal (cells kept, cells
  masked, the dropout calls and their rates) and rates that must agree within sampling error (entries masked,
  elements dropped, how often each cell is kept and masked).

Only one-sentence data can be replayed (the order of several sentences in an epoch is drawn by different samplers
and is not aligned); the statistics cover any data. Masked entries are compared over the non-zero entries, the only
ones masking can change in fine-tuning (upstream also draws its mask over the zero entries, to no effect there).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Step:
    """Every draw of one training step."""

    n_cells: int  # cells of the sentence before dropping
    nnz: int  # its non-zero counts: (n_cells, nnz) tells the sentences of a dataset apart
    kept: np.ndarray  # indices of the kept cells, in the order the model sees them
    masked: np.ndarray  # positions (in the kept order) of the cells chosen for masking
    entries: np.ndarray  # k x 2: (position in the kept order, gene column) of each hidden non-zero entry
    nnz_masked_cells: int  # non-zero entries of the masked cells (what the entry rate is counted over)
    dropout: list[tuple[float, torch.Tensor]] = field(default_factory=list)  # (p, keep mask) per call, in order


class Draws:
    """The steps of one run, in order; ``current`` receives the dropout masks of the step under way."""

    def __init__(self):
        self.steps: list[Step] = []

    @property
    def current(self) -> Step:
        return self.steps[-1]

    def __len__(self) -> int:
        return len(self.steps)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    """A dropout call's shape without leading 1s (upstream's attention works on 1 x N x D, ours on N x D)."""
    shape = tuple(t.shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _recorded_keep(state: dict, p: float, x: torch.Tensor) -> torch.Tensor:
    """The next recorded dropout mask, for a call of rate ``p`` on ``x`` (which must match the recorded call)."""
    if not state["dropout"]:
        raise RuntimeError(f"replay: a dropout call (p {p}, shape {_shape(x)}) beyond the recorded ones")
    p_rec, keep = state["dropout"].pop(0)
    if p_rec != p or _shape(keep) != _shape(x):
        raise RuntimeError(
            f"replay: dropout call (p {p}, shape {_shape(x)}) differs from the recorded one "
            f"(p {p_rec}, shape {_shape(keep)})"
        )
    return keep.reshape(x.shape).to(x.device)


def _check_used(state: dict) -> None:
    if state["dropout"]:
        raise RuntimeError(
            f"replay: the step made fewer dropout calls than were recorded ({len(state['dropout'])} left)"
        )


def _check_all_used(state: dict, queue: list) -> None:
    """At the end of a replay: every recorded step and every dropout mask was taken."""
    _check_used(state)
    if queue:
        raise RuntimeError(f"replay: {len(queue)} recorded steps were not used")


@contextlib.contextmanager
def _patched(*patches):
    """Each ``(owner, attribute, value)`` set for the block, the originals restored after it."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _hidden_entries(row_ids: torch.Tensor, cols: torch.Tensor, hidden: torch.Tensor) -> np.ndarray:
    return torch.stack([row_ids[hidden], cols[hidden]], 1).cpu().numpy().astype(np.int64)


# ---- ours ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def record_ours(draws: Draws):
    """Record the draws of our fine-tuning (``cellplm.finetune``) while it runs unchanged."""
    from cellplm.model.cellplm import CellPLM
    from cellplm.model.dropout import Dropout

    mask_orig, keep_orig = CellPLM.mask, Dropout.keep_mask

    def mask(model, sentence, generator=None, dense=True):
        masked, kept, m = mask_orig(model, sentence, generator, dense)
        rows = masked.row_ids()
        hidden = masked.entry_keep == 0
        in_masked = torch.zeros(masked.n_cells, dtype=torch.bool, device=rows.device)
        in_masked[m.cells] = True
        draws.steps.append(
            Step(
                n_cells=sentence.n_cells,
                nnz=sentence.indices.numel(),
                kept=kept.cpu().numpy(),
                masked=m.cells.cpu().numpy(),
                entries=_hidden_entries(rows, masked.indices, hidden),
                nnz_masked_cells=int(in_masked[rows].sum()),
            )
        )
        return masked, kept, m

    def keep_mask(module, x):
        keep = keep_orig(module, x)
        if draws.steps:
            draws.current.dropout.append((module.p, keep.cpu()))
        return keep

    with _patched((CellPLM, "mask", mask), (Dropout, "keep_mask", keep_mask)):
        yield draws


@contextlib.contextmanager
def replay_into_ours(steps: list[Step]):
    """Our fine-tuning with every draw taken from ``steps`` (recorded from upstream, or from ours)."""
    from cellplm.model.cellplm import CellPLM
    from cellplm.model.dropout import Dropout
    from cellplm.model.masking import Mask

    queue = list(steps)
    state = {"dropout": []}

    def mask(model, sentence, generator=None, dense=True):
        if not queue:
            raise RuntimeError("replay: the run takes more steps than were recorded")
        _check_used(state)
        step = queue.pop(0)
        if (sentence.n_cells, sentence.indices.numel()) != (step.n_cells, step.nnz):
            raise RuntimeError(f"replay: a sentence of {sentence.n_cells} cells, the recorded step had {step.n_cells}")
        kept = torch.as_tensor(step.kept, device=sentence.device)
        sub = sentence.select(kept)
        hide = torch.zeros(sub.n_cells, sub.n_vocab, dtype=torch.bool)
        hide[step.entries[:, 0], step.entries[:, 1]] = True
        hidden = hide.to(sub.device)[sub.row_ids(), sub.indices]
        if int(hidden.sum()) != len(step.entries):
            raise RuntimeError("replay: recorded masked entries are not non-zero entries of this sentence")
        state["dropout"] = list(step.dropout)
        keep = (~hidden).to(sub.values.dtype)
        cells = torch.as_tensor(step.masked, device=sub.device)
        return dataclasses.replace(sub, entry_keep=keep), kept, Mask(cells=cells, entries=None)

    def keep_mask(module, x):
        return _recorded_keep(state, module.p, x)

    with _patched((CellPLM, "mask", mask), (Dropout, "keep_mask", keep_mask)):
        yield
        _check_all_used(state, queue)


# ---- upstream (CellPLM 0.1.0.post2) -------------------------------------------------------------------------------
def _aten_cpu_dropout(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.dropout(x, p, training=True)`` on the CPU as ATen computes it (``_dropout_impl``: a Bernoulli(1 - p) noise
    tensor of x's shape, divided by 1 - p, times x), returning the keep mask too. Same random numbers, same result:
    :func:`check_upstream_dropout`."""
    noise = torch.empty_like(x).bernoulli_(1 - p)
    keep = noise.bool()
    return x * noise.div_(1 - p), keep


def check_upstream_dropout(p: float = 0.5, shape=(64, 32)) -> bool:
    """Whether the recorder's dropout gives exactly ``nn.Dropout``'s output from the same generator state."""
    x = torch.randn(shape)
    state = torch.get_rng_state()
    expected = torch.nn.functional.dropout(x, p, training=True)
    torch.set_rng_state(state)
    got, _ = _aten_cpu_dropout(x, p)
    return bool(torch.equal(expected, got))


def _capture(module, name: str, out: list):
    """``module.name`` as usual, but each result also kept in ``out`` (a :func:`_patched` patch)."""
    orig = getattr(module, name)

    def wrapped(*args, **kwargs):
        result = orig(*args, **kwargs)
        out.append(result)
        return result

    return module, name, wrapped


def _upstream_entries(x_seq: torch.Tensor, mask: torch.Tensor, masked: np.ndarray) -> tuple[np.ndarray, int]:
    """(hidden non-zero entries as (row, column), non-zero entries of the masked cells) of upstream's dense mask."""
    x = x_seq.coalesce()
    rows, cols = x.indices()
    hidden = mask[rows, cols].bool()
    in_masked = torch.zeros(x.shape[0], dtype=torch.bool)
    in_masked[torch.as_tensor(masked, dtype=torch.long)] = True
    return _hidden_entries(rows, cols, hidden), int(in_masked[rows].sum())


@contextlib.contextmanager
def record_upstream(draws: Draws):
    """Record the draws of upstream's ``CellTypeAnnotationPipeline.fit`` while it runs as released."""
    from CellPLM.utils import mask as upstream_mask

    apply_orig = upstream_mask.MaskBuilder.apply_mask

    def apply_mask(builder, x_dict):
        n, nnz = x_dict["x_seq"].shape[0], x_dict["x_seq"].coalesce()._nnz()
        perms, permutations = [], []
        with _patched(_capture(torch, "randperm", perms), _capture(np.random, "permutation", permutations)):
            out = apply_orig(builder, x_dict)
        if not builder.training:
            return out
        n_kept = out["x_seq"].shape[0]
        kept = perms[0][:n_kept].cpu().numpy() if perms else np.arange(n)
        masked = np.sort(permutations[0][: int(builder._mask_node_rate * n_kept)])
        entries, nnz_masked_cells = _upstream_entries(out["x_seq"], out["input_mask"].cpu(), masked)
        draws.steps.append(
            Step(n_cells=n, nnz=nnz, kept=kept, masked=masked, entries=entries, nnz_masked_cells=nnz_masked_cells)
        )
        return out

    def dropout(module, x):
        if not module.training or module.p == 0:
            return x
        y, keep = _aten_cpu_dropout(x, module.p)
        if draws.steps:
            draws.current.dropout.append((module.p, keep.cpu()))
        return y

    with _patched((upstream_mask.MaskBuilder, "apply_mask", apply_mask), (torch.nn.Dropout, "forward", dropout)):
        yield draws


@contextlib.contextmanager
def replay_into_upstream(steps: list[Step]):
    """Upstream's fine-tuning with every draw taken from ``steps``: its own ``drop_nodes`` and ``simple_mask`` run on
    permutations and uniform numbers that reproduce the recorded cells and entries."""
    from CellPLM.utils import mask as upstream_mask

    apply_orig = upstream_mask.MaskBuilder.apply_mask
    queue = list(steps)
    state = {"dropout": []}

    def apply_mask(builder, x_dict):
        if not builder.training:
            return apply_orig(builder, x_dict)
        if not queue:
            raise RuntimeError("replay: the run takes more steps than were recorded")
        _check_used(state)
        step = queue.pop(0)
        n = x_dict["x_seq"].shape[0]
        if (n, x_dict["x_seq"].coalesce()._nnz()) != (step.n_cells, step.nnz):
            raise RuntimeError(f"replay: a sentence of {n} cells, the recorded step had {step.n_cells}")
        rest = np.setdiff1d(np.arange(n), step.kept)
        n_kept = len(step.kept)
        others = np.setdiff1d(np.arange(n_kept), step.masked)

        def randperm(size, *args, **kwargs):  # drop_nodes keeps the first n_kept: the recorded cells, in order
            return torch.as_tensor(np.concatenate([step.kept, rest]), device=kwargs.get("device"))

        def permutation(size):  # MaskBuilder masks the first int(rate * n): the recorded cells
            return np.concatenate([step.masked, others])

        def rand(*shape, **kwargs):  # an entry is masked where rand <= rate: 0 there, 1 elsewhere
            u = torch.ones(*shape, device=kwargs.get("device"))
            u[step.entries[:, 0], step.entries[:, 1]] = 0.0
            return u

        with _patched((torch, "randperm", randperm), (np.random, "permutation", permutation), (torch, "rand", rand)):
            out = apply_orig(builder, x_dict)
        entries, _ = _upstream_entries(out["x_seq"], out["input_mask"].cpu(), step.masked)
        if len(entries) != len(step.entries):
            raise RuntimeError("replay: recorded masked entries are not non-zero entries of this sentence")
        state["dropout"] = list(step.dropout)
        return out

    def dropout(module, x):
        if not module.training or module.p == 0:
            return x
        return x * _recorded_keep(state, module.p, x) * (1.0 / (1.0 - module.p))

    with _patched((upstream_mask.MaskBuilder, "apply_mask", apply_mask), (torch.nn.Dropout, "forward", dropout)):
        yield
        _check_all_used(state, queue)


# ---- comparing the draws of two genuine runs -------------------------------------------------------------------------
def _two_proportions(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of equal proportions (pooled z test)."""
    from scipy import stats

    if n1 == 0 or n2 == 0:
        return float("nan")
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 1.0 if se == 0 else float(2 * stats.norm.sf(abs(k1 / n1 - k2 / n2) / se))


def _uniformity(counts: np.ndarray) -> float:
    """Chi-square p-value that ``counts`` (per cell) come from equal probabilities."""
    from scipy import stats

    return float(stats.chisquare(counts).pvalue) if counts.sum() else float("nan")


def _summary(steps: list[Step]) -> dict:
    """What the draws of one run add up to, sentence by sentence (told apart by their cells and non-zero counts)."""
    sizes = sorted({(s.n_cells, s.nnz) for s in steps})
    kept_per_cell = {k: np.zeros(k[0]) for k in sizes}
    masked_per_cell = {k: np.zeros(k[0]) for k in sizes}
    for s in steps:
        kept_per_cell[s.n_cells, s.nnz][s.kept] += 1
        masked_per_cell[s.n_cells, s.nnz][s.kept[s.masked]] += 1
    # an epoch visits every sentence once: the position of each sentence within its epoch
    epochs = [steps[i : i + len(sizes)] for i in range(0, len(steps) - len(sizes) + 1, len(sizes))]
    position = np.zeros((len(sizes), len(sizes)))
    for epoch in epochs:
        for pos, s in enumerate(epoch):
            position[sizes.index((s.n_cells, s.nnz)), pos] += 1
    # a call's shape with its cell dimension named: all kept cells ("cells"), or the training cells among them that
    # the annotation head sees ("train cells": their number varies from step to step)
    calls = {
        key: [
            [
                (
                    p,
                    tuple(
                        "cells" if i == 0 and d == len(s.kept) else "train cells" if i == 0 else d
                        for i, d in enumerate(_shape(k))
                    ),
                )
                for p, k in s.dropout
            ]
            for s in steps
            if (s.n_cells, s.nnz) == key
        ]
        for key in sizes
    }
    by_rate: dict[float, list[int]] = {}
    for s in steps:
        for p, keep in s.dropout:
            kept_, total = by_rate.setdefault(p, [0, 0])
            by_rate[p] = [kept_ + int(keep.sum()), total + keep.numel()]
    return dict(
        steps=len(steps),
        sentences=sizes,
        kept={k: sorted({len(s.kept) for s in steps if (s.n_cells, s.nnz) == k}) for k in sizes},
        masked={k: sorted({len(s.masked) for s in steps if (s.n_cells, s.nnz) == k}) for k in sizes},
        entries_hidden=sum(len(s.entries) for s in steps),
        entries_total=sum(s.nnz_masked_cells for s in steps),
        entries_outside_masked_cells=sum(int((~np.isin(s.entries[:, 0], s.masked)).sum()) for s in steps),
        kept_per_cell=np.concatenate(list(kept_per_cell.values())),
        masked_per_cell=np.concatenate(list(masked_per_cell.values())),
        epochs_visit_each_sentence_once=all(sorted((s.n_cells, s.nnz) for s in e) == sizes for e in epochs),
        sentence_position=position.ravel(),
        calls={n: c[0] for n, c in calls.items()},
        calls_same_every_step=all(all(x == c[0] for x in c) for c in calls.values()),
        dropout_by_rate=by_rate,
        head_rows=sum(_shape(s.dropout[-1][1])[0] for s in steps if s.dropout),
        kept_total=sum(len(s.kept) for s in steps if s.dropout),
    )


def draw_statistics(ours: list[Step], upstream: list[Step]) -> list[dict]:
    """Checks of the two runs' draws, one row each: ``kind`` exact (``ok`` is equality) or statistical (``p`` of
    the two samples agreeing; a rate check also says each side's rate)."""
    a, b = _summary(ours), _summary(upstream)
    rows = []

    def exact(check, ours_value, upstream_value):
        rows.append(
            dict(
                check=check,
                kind="exact",
                ours=str(ours_value),
                upstream=str(upstream_value),
                ok=ours_value == upstream_value,
            )
        )

    def rate(check, k1, n1, k2, n2):
        p = _two_proportions(k1, n1, k2, n2)
        rows.append(
            dict(
                check=check,
                kind="rate",
                ours=f"{k1 / n1:.5f} of {n1}",
                upstream=f"{k2 / n2:.5f} of {n2}",
                ours_rate=k1 / n1,
                upstream_rate=k2 / n2,
                p=p,
                ok=p > 0.001,
            )
        )

    def uniform(check, counts_ours, counts_upstream):
        po, pu = _uniformity(counts_ours), _uniformity(counts_upstream)
        rows.append(
            dict(
                check=check,
                kind="uniform",
                ours=f"chi-square p {po:.3f}",
                upstream=f"chi-square p {pu:.3f}",
                p=min(po, pu),
                ok=min(po, pu) > 0.001,
            )
        )

    exact("steps", a["steps"], b["steps"])
    exact("sentences (cells, non-zero counts)", a["sentences"], b["sentences"])
    exact(
        "every epoch visits every sentence once",
        a["epochs_visit_each_sentence_once"],
        b["epochs_visit_each_sentence_once"],
    )
    if len(a["sentences"]) > 1:
        uniform(
            "each sentence equally likely at each position of an epoch", a["sentence_position"], b["sentence_position"]
        )
    exact("cells kept per step, per sentence (cell dropping)", a["kept"], b["kept"])
    exact("cells masked per step, per sentence", a["masked"], b["masked"])
    exact(
        "masked entries outside the masked cells", a["entries_outside_masked_cells"], b["entries_outside_masked_cells"]
    )
    rate(
        "non-zero entries of masked cells that are masked",
        a["entries_hidden"],
        a["entries_total"],
        b["entries_hidden"],
        b["entries_total"],
    )
    exact("dropout calls of a step: (rate, shape) in forward order, per sentence", a["calls"], b["calls"])
    exact("the same dropout calls in every step of a sentence", a["calls_same_every_step"], b["calls_same_every_step"])
    for p in sorted(set(a["dropout_by_rate"]) | set(b["dropout_by_rate"])):
        ka, na = a["dropout_by_rate"].get(p, [0, 0])
        kb, nb = b["dropout_by_rate"].get(p, [0, 0])
        rate(f"elements kept by dropout p={p}", ka, na, kb, nb)
    rate(
        "kept cells that are training cells (rows of the head's dropout)",
        a["head_rows"],
        a["kept_total"],
        b["head_rows"],
        b["kept_total"],
    )
    uniform("each cell equally likely to be kept", a["kept_per_cell"], b["kept_per_cell"])
    uniform("each cell equally likely to be masked", a["masked_per_cell"], b["masked_per_cell"])
    return rows
