"""Constrained-decoding benchmark (issue 4) and semantic-ID stats on the Home Depot catalog.

Setup, as BENCHMARK.md describes it: a random-init T5 (d_model 256, 4 encoder + 2 decoder
layers, 16k vocabulary), the 54,667 Home Depot items' semantic IDs from
:func:`tandem.ids.build_semantic_ids` (3 levels x 32 + suffix, mapped to tokens as
``1000 + offset[position] + code``) followed by EOS, so 5 decoding steps; batches of 32
queries (random non-ID tokens, 6-16 long, padded), beam 10, 10 returned.

Compared, each timed once per round, rounds interleaved, medians reported:

* ``hf_prefix_fn``: ``model.generate(prefix_allowed_tokens_fn=...)`` over a dict trie (the
  baseline of BENCHMARK.md);
* ``hf_unconstrained``: ``model.generate`` with no constraint, forced to the same length;
* ``ours_level`` / ``ours_full``: :func:`tandem.generative.decoding.beam_search_tensors`
  with per-position ID-vocabulary normalisation (``level``: the fast path) or the model's
  exact full-vocabulary log-probs (``full``);
* ``ours_*_unconstrained``: the same search with the trie mask disabled (every beam may
  take any token of the position's vocabulary): the fair "unconstrained beam search of
  the same length" for the constraint overhead.

Figures: ``speedup_vs_prefix_fn`` = hf_prefix_fn / ours_level time (``_full`` variant too);
``constraint_overhead`` = (ours_level - ours_level_unconstrained) / ours_level_unconstrained
(``_full`` variant too), measured separately as the median ratio over many back-to-back
A/B pairs on one batch (24, quick 8) in process CPU time (GPU: wall time), as it is
smaller than round-to-round noise; the
speedups are medians over rounds of the per-round (paired) ratio, which cancels load
drifts on a shared machine; ms/query and queries/s are medians over rounds; throughput in queries/s; agreement of ``ours_full`` with HF's
constrained top-10 (both score with the model's full-vocabulary log-probs); ID stats
(utilisation, entropy, largest cluster, build time, peak memory).

All methods run with the same torch thread count, 1 by default (``--threads``): on a
2-core machine shared with other work, two intra-op threads make every small op wait for
a descheduled partner thread, which swamps what is being measured; a CPU server would
also run one single-threaded worker per core.

``python -m bench.decoding [--quick] --out FILE.json``. ``--quick``: a cheaper k-means
(1 seeding, 10 iterations) unless a cached full build exists, 1 batch and 3 timing rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from tandem.catalog.datasets import data_root
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root("homedepot")  # TANDEM_DATA, else ../shared/data
WORK = Path(os.environ.get("TANDEM_HOME", ROOT / ".tandem")) / "bench" / "decoding"
ID_BASE, EOS, VOCAB = 1000, 1, 16_384


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_ids(quick: bool) -> tuple[Any, dict[str, Any]]:
    """Semantic IDs for the whole catalog (cached under .tandem/bench/decoding) and their stats."""
    from tandem.catalog.item import Item
    from tandem.ids import IdMap, SemanticIdConfig, build_semantic_ids

    cfg = SemanticIdConfig() if not quick else SemanticIdConfig(kmeans_restarts=1, kmeans_iters=10)
    for name in (["full"] if not quick else ["full", "quick"]):
        cached = WORK / f"ids-{name}"
        if (cached / "idmap.json").is_file():
            info = json.loads((WORK / f"ids-{name}.build.json").read_text())
            return IdMap.load(str(cached)), info
    with (DATA / "products.jsonl").open(encoding="utf-8") as fh:
        items = [Item(**json.loads(line)) for line in fh if line.strip()]
    rss0 = _rss_mb()
    started = time.perf_counter()
    idmap = build_semantic_ids(items, cfg)
    took = time.perf_counter() - started
    name = "quick" if quick else "full"
    info = {"config": name, "build_s": round(took, 2), "peak_rss_growth_mb": round(_rss_mb() - rss0, 1),
            "peak_rss_mb": round(_rss_mb(), 1)}
    idmap.save(str(WORK / f"ids-{name}"))
    (WORK / f"ids-{name}.build.json").write_text(json.dumps(info))
    return idmap, info


def token_ids(idmap: Any) -> Any:
    """Codes → token ids (one token per (position, code)), EOS appended."""
    import numpy as np

    codes = idmap.as_array()
    offsets = np.concatenate([[0], np.cumsum(idmap.code_space())[:-1]])
    toks = ID_BASE + offsets[None, :] + codes
    return np.concatenate([toks, np.full((len(codes), 1), EOS)], axis=1)


def make_model(device: str) -> Any:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=VOCAB, d_model=256, d_ff=1024, num_layers=4, num_decoder_layers=2, num_heads=4,
                   d_kv=64, decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS)
    return T5ForConditionalGeneration(cfg).eval().to(device)


def make_queries(n_batches: int, batch: int, device: str) -> list[tuple[Any, Any]]:
    import torch

    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n_batches):
        lens = torch.randint(6, 17, (batch,), generator=g)
        ids = torch.randint(2, ID_BASE, (batch, int(lens.max())), generator=g)
        mask = (torch.arange(ids.shape[1])[None, :] < lens[:, None]).long()
        out.append(((ids * mask).to(device), mask.to(device)))
    return out


def dict_trie(seqs: Any) -> dict[int, Any]:
    root: dict[int, Any] = {}
    for row in seqs.tolist():
        node = root
        for t in row:
            node = node.setdefault(t, {})
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="cheaper ID build, 1 batch, 3 timing rounds (< 1 min)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for every method (default 1: steady on a shared machine)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from tandem.generative.decoding import beam_search_tensors
    from tandem.ids.trie import PrefixTrie

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rounds = args.rounds or (3 if args.quick else 7)
    ab_pairs = 8 if args.quick else 24
    batch, beams = 32, 10

    idmap, build_info = build_ids(args.quick)
    seqs = token_ids(idmap)
    started = time.perf_counter()
    trie = PrefixTrie.from_sequences(seqs)
    trie_build_s = time.perf_counter() - started
    model = make_model(device)
    queries = make_queries(1 if args.quick else 2, batch, device)
    length = seqs.shape[1]
    root = dict_trie(seqs)

    def allowed(_batch_id: int, prefix: torch.Tensor) -> list[int]:
        node = root
        for t in prefix.tolist()[1:]:
            node = node.get(t, {})
        return list(node) or [EOS]

    def hf(ids: torch.Tensor, mask: torch.Tensor, constrained: bool) -> torch.Tensor:
        kw: dict[str, Any] = {"prefix_allowed_tokens_fn": allowed} if constrained else {"min_new_tokens": length}
        return model.generate(input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                              max_new_tokens=length, do_sample=False, **kw)

    def ours(norm: str, constrained: bool) -> Any:
        return lambda ids, mask: beam_search_tensors(model, ids, mask, trie, beams, normalize=norm,
                                                     constrained=constrained)

    methods = {
        "hf_prefix_fn": lambda ids, mask: hf(ids, mask, True),
        "hf_unconstrained": lambda ids, mask: hf(ids, mask, False),
        "ours_level": ours("level", True),
        "ours_level_unconstrained": ours("level", False),
        "ours_full": ours("full", True),
        "ours_full_unconstrained": ours("full", False),
    }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for fn in methods.values():  # warm-up
            fn(*queries[0])
        times: dict[str, list[float]] = {m: [] for m in methods}
        names = list(methods)
        for rnd in range(rounds):
            # Rotate the order each round so no method always runs after the same neighbour.
            for name in names[rnd % len(names):] + names[: rnd % len(names)]:
                fn = methods[name]
                sync()
                t0 = time.perf_counter()
                for ids, mask in queries:
                    fn(ids, mask)
                sync()
                times[name].append((time.perf_counter() - t0) / (len(queries) * batch))
        # The constraint overhead is a few percent at most, below the round-to-round noise of a
        # shared machine, so it gets its own measurement: many back-to-back A/B pairs
        # (alternating which runs first) on one batch, and the median of the paired ratios.
        # On CPU the clock is this process's CPU time, which does not count the time other
        # processes hold the cores (with one torch thread, CPU time is the work done).
        clock = time.process_time if device == "cpu" else time.perf_counter

        def ab(a: str, b: str) -> float:
            ratios = []
            for i in range(ab_pairs):
                pair = {}
                for name in ((a, b) if i % 2 == 0 else (b, a)):
                    sync()
                    t0 = clock()
                    methods[name](*queries[0])
                    sync()
                    pair[name] = clock() - t0
                ratios.append(pair[a] / pair[b])
            return statistics.median(ratios) - 1

        overhead = {"level": ab("ours_level", "ours_level_unconstrained"),
                    "full": ab("ours_full", "ours_full_unconstrained")}
        # Sanity: every result is a valid ID, and ours_full agrees with HF's constrained search.
        agree_top1, overlap = [], []
        for ids, mask in queries:
            toks, scores, leaves = beam_search_tensors(model, ids, mask, trie, beams, normalize="full")
            lvl, _, _ = beam_search_tensors(model, ids, mask, trie, beams, normalize="level")
            for t in (toks, lvl):
                flat = t.reshape(-1, length).cpu().numpy()
                if not all(trie.contains(row) for row in flat):
                    raise SystemExit("decoding returned a sequence that is not an ID")
            hf_out = hf(ids, mask, True)[:, 1:].reshape(batch, beams, -1).cpu().numpy()
            for q in range(batch):
                mine = [tuple(r) for r in toks[q].cpu().numpy().tolist()]
                theirs = [tuple(r[:length]) for r in hf_out[q].tolist()]
                agree_top1.append(mine[0] == theirs[0])
                overlap.append(len(set(mine) & set(theirs)) / beams)

    ms = {m: statistics.median(v) * 1000 for m, v in times.items()}

    def paired(num: str, den: str, minus_one: bool = False) -> float:
        """Median over rounds of the per-round ratio: load drifts on a shared machine cancel."""
        ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
        return statistics.median([r - 1 for r in ratios] if minus_one else ratios)

    stats = idmap.stats()
    figures: dict[str, Any] = {
        "speedup_vs_prefix_fn": round(paired("hf_prefix_fn", "ours_level"), 2),
        "speedup_vs_prefix_fn_full": round(paired("hf_prefix_fn", "ours_full"), 2),
        "constraint_overhead": round(overhead["level"], 4),
        "constraint_overhead_full": round(overhead["full"], 4),
        "hf_constraint_overhead": round(paired("hf_prefix_fn", "hf_unconstrained", True), 4),
        "speedup_vs_hf_unconstrained": round(paired("hf_unconstrained", "ours_level"), 2),
        **{f"ms_per_query_{m}": round(v, 3) for m, v in ms.items()},
        **{f"qps_{m}": round(1000 / v, 1) for m, v in ms.items()},
        "top1_agreement_full_vs_hf_prefix_fn": round(float(np.mean(agree_top1)), 4),
        "top10_overlap_full_vs_hf_prefix_fn": round(float(np.mean(overlap)), 4),
        "ids": len(idmap),
        "trie_build_s": round(trie_build_s, 3),
        "id_build_s": build_info["build_s"],
        "id_build_peak_rss_growth_mb": build_info["peak_rss_growth_mb"],
        "id_collisions_before_suffix": stats["collisions_before_suffix"],
        "id_largest_leaf": stats["largest_leaf"],
        "id_levels": [{k: lv[k] for k in ("position", "kind", "nodes", "utilisation", "entropy_bits",
                                          "entropy_ratio", "largest_cluster")} for lv in stats["levels"]],
    }
    config = {"device": device, "batch": batch, "beams": beams, "return": beams, "rounds": rounds,
              "overhead_ab_pairs": ab_pairs,
              "queries_per_round": len(queries) * batch, "id_length_with_eos": length,
              "id_config": build_info["config"], "torch_threads": torch.get_num_threads()}
    _print_table(ms, figures, config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2))


def _print_table(ms: dict[str, float], figures: dict[str, Any], config: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    table = Table(title=f"bench.decoding — {figures['ids']} Home Depot IDs, batch {config['batch']}, "
                        f"beam {config['beams']}, {config['device']}")
    for col in ("method", "ms/query", "queries/s", "vs hf_prefix_fn"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, v in ms.items():
        table.add_row(m, f"{v:.2f}", f"{1000 / v:.0f}", f"{ms['hf_prefix_fn'] / v:.2f}x")
    console.print(table)
    for key in ("speedup_vs_prefix_fn", "speedup_vs_prefix_fn_full", "constraint_overhead",
                "constraint_overhead_full", "hf_constraint_overhead", "top1_agreement_full_vs_hf_prefix_fn",
                "top10_overlap_full_vs_hf_prefix_fn", "trie_build_s", "id_build_s", "id_build_peak_rss_growth_mb",
                "id_collisions_before_suffix", "id_largest_leaf"):
        console.print(f"{key:40s} {figures[key]}")
    ids = Table(title="semantic IDs per position")
    for col in ("pos", "kind", "nodes", "utilisation", "entropy bits", "entropy ratio", "largest cluster"):
        ids.add_column(col, justify="right")
    for lv in figures["id_levels"]:
        ids.add_row(str(lv["position"]), lv["kind"], str(lv["nodes"]), f"{lv['utilisation']:.3f}",
                    f"{lv['entropy_bits']:.2f}", f"{lv['entropy_ratio']:.3f}", str(lv["largest_cluster"]))
    console.print(ids)


if __name__ == "__main__":
    main()
