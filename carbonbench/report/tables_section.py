"""The tables section: every point, codecarbon beside carbonbench, failed points.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A section with
nothing to show says why, rather than vanishing, so a reader can tell "not measured" from "forgotten".
"""

from __future__ import annotations

import math
from typing import Any

from carbonbench.report import caveats
from carbonbench.report.data import ReportData
from carbonbench.report.html import Cell, method_tag, note, num_cell, section, table


def tables(data: ReportData) -> str:
    p = data.points
    # Decode without its prefill (carbonbench.decode_phase), as peers report it: only where a point has it.
    decode_only = bool(p["decode_only_joules_per_token_mean"].notna().any() if len(p) else False)
    rows = []
    for r in p.to_dict("records"):
        rows.append(
            [
                r["run_label"],
                r["model"],
                r["workload"],
                num_cell(r["batch_size"]),
                r["sizes"],
                r["dtype"],
                Cell(r["status"], r["status"], "" if r["status"] == "ok" else "bad"),
                num_cell(r["n_repeats"]),
                num_cell(r["tokens_per_s_mean"], half=r["tokens_per_s_ci95"]),
                num_cell(r["joules_per_token_mean"], half=r["joules_per_token_ci95"]),
                Cell(
                    method_tag(caveats.method_text(r["energy_method"], r["energy_missing"])) if r["n_repeats"] else "",
                    r["energy_method"],
                    raw_html=True,
                ),
                num_cell(r["kwh_per_million_tokens_mean"], half=r["kwh_per_million_tokens_ci95"]),
                num_cell(r["co2e_g_per_million_tokens_mean"], half=r["co2e_g_per_million_tokens_ci95"]),
                num_cell(r["usd_per_million_tokens_mean"], half=r["usd_per_million_tokens_ci95"]),
                num_cell(_ms(r["ttft_s"])),
                num_cell(_ms(r["tpot_s"])),
                *(_decode_only_cells(r) if decode_only else []),
                num_cell(_ms(r["latency_p50_s"])),
                num_cell(r["power_w"]),
                num_cell(r["mfu"] * 100 if _fin(r["mfu"]) else None, 3),
                num_cell(r["hfu"] * 100 if _fin(r["hfu"]) else None, 3),
                num_cell(r["peak_memory_bytes"] / 2**20 if _fin(r["peak_memory_bytes"]) else None),
                r["flags"],
            ]
        )
    parts = [
        table(
            [
                "machine",
                "model",
                "workload",
                "batch",
                "sizes",
                "dtype",
                "status",
                "repeats",
                "tokens/s ± 95% CI",
                "J/token ± 95% CI",
                "energy method",
                "kWh / 1M tok",
                "gCO2e / 1M tok",
                "$ / 1M tok",
                "TTFT ms",
                "TPOT ms",
                *(DECODE_ONLY_HEADS if decode_only else []),
                "step p50 ms",
                "mean W",
                "MFU %",
                "HFU %",
                "peak MiB",
                "flags",
            ],
            rows,
            table_id="points",
            caption="Every point (click a column to sort). ± is the half-width "
            "of the 95% confidence interval over repeats (Student's t)."
            + (
                " Decode J/token and tokens/s count the whole generation, prefill included; the decode-only "
                "columns leave the prefill out (tokens after the first; energy attributed by time share)."
                if decode_only
                else ""
            ),
        )
    ]
    parts.append("<h3>codecarbon beside carbonbench</h3>" + caveats.codecarbon_table(data))
    failed = p[p["status"] != "ok"]
    parts.append("<h3>Failed points</h3>")
    if failed.empty:
        parts.append(note("None: every point was measured."))
    else:
        parts.append(
            table(
                ["machine", "point", "status", "repeats kept", "error"],
                [
                    [r["run_label"], r["label"], r["status"], num_cell(r["n_repeats"]), Cell(r["error"], cls="wrap")]
                    for _, r in failed.iterrows()
                ],
                table_id="failed",
            )
        )
    return section("tables", "Tables", "".join(parts))


DECODE_ONLY_HEADS = ("decode-only tokens/s ± 95% CI", "decode-only J/token ± 95% CI", "decode-only energy method")


def _decode_only_cells(r: dict) -> list:
    method = r["decode_only_energy_method"]
    return [
        num_cell(r["decode_only_tokens_per_s_mean"], half=r["decode_only_tokens_per_s_ci95"]),
        num_cell(r["decode_only_joules_per_token_mean"], half=r["decode_only_joules_per_token_ci95"]),
        Cell(method_tag(method) if isinstance(method, str) else "", method, raw_html=True),
    ]


def _ms(x: Any) -> Any:
    return x * 1e3 if _fin(x) else None


def _fin(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
