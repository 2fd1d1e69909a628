"""The training extrapolations section.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A section with
nothing to show says why, rather than vanishing, so a reader can tell "not measured" from "forgotten".
"""

from __future__ import annotations

from carbonbench.report import carbon_figures, training
from carbonbench.report.data import ReportData
from carbonbench.report.html import Cell, Figures, esc, method_tag, note, num_cell, section, table


def training_section(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    jobs = training.full_jobs(data.points)
    if jobs.empty:
        return section(
            "training",
            "Training extrapolations",
            note("No training point was measured successfully, so there is nothing to extrapolate."),
        )
    parts = [figures.embed(carbon_figures.training_by_grid(jobs, colors))]
    rows = [
        [
            j["run_label"],
            j["label"],
            Cell(method_tag(f"estimated from {j['method']}"), raw_html=True),
            Cell(f"{j['tokens'] / 1e9:g}B", j["tokens"], "num"),
            Cell(j["tokens_source"], cls="wrap"),
            num_cell(j["joules_per_token"]),
            num_cell(j["energy_mwh"], 3),
            num_cell(j["wall_days"], 3),
            num_cell(j["device_days"], 3),
            num_cell(j["co2e_t"], 3),
            num_cell(j["cost_usd"], 3),
        ]
        for _, j in jobs.iterrows()
    ]
    parts.append(
        table(
            [
                "machine",
                "measured step",
                "method",
                "tokens D",
                "D from",
                "J/token",
                "MWh (x PUE)",
                "wall days",
                "device-days",
                "tCO2e (run's grid)",
                "$",
            ],
            rows,
            caption="The measured model trained on D tokens at the measured J/token and tokens/s: "
            "energy = D x J/token x PUE, time = D / tokens/s. Linear in D; no restarts, "
            "evaluation or idle time.",
        )
    )
    ref = training.reference_jobs(data.points)
    if ref.empty:
        parts.append(
            note(
                "OPT-175B at a measured MFU needs a 16-bit training point on a GPU in the hardware table "
                "(CPU and fp32 runs have no MFU)."
            )
        )
    else:
        rows = [
            [
                Cell(r["what"], cls="wrap"),
                r["hardware"],
                num_cell(r["devices"]),
                num_cell(r["mfu"] * 100, 3),
                num_cell(r["hfu"] * 100, 3),
                num_cell(r["wall_days"], 3),
                num_cell(r["energy_mwh"], 3),
                num_cell(r["pue"]),
                num_cell(r["co2e_t"], 3),
                num_cell(r.get("published_co2e_t")),
                num_cell(r["cost_usd"], 3),
            ]
            for _, r in ref.iterrows()
        ]
        parts.append(
            table(
                [
                    "OPT-175B, 300B tokens",
                    "hardware",
                    "devices",
                    "MFU %",
                    "HFU %",
                    "wall days",
                    "MWh",
                    "PUE",
                    "tCO2e",
                    "published tCO2e",
                    "$",
                ],
                rows,
                caption="Estimates (carbonbench.estimate) with activation recomputation, as the job was "
                "run: MFU counts model FLOPs (full attention, no recomputation), HFU hardware "
                "FLOPs (recomputation included). Device power at TDP for the whole job. A small "
                "model at a small batch uses a small share of a GPU, so its MFU understates what "
                "a 175B model reaches: read the published row as the reference. The published "
                "tCO2e cannot be checked: the paper gives neither its energy nor its grid.",
            )
        )
        parts.append(
            '<details><summary>Assumptions</summary><ul class="tight">'
            + "".join(f"<li>{esc(a)}</li>" for a in ref.iloc[0]["assumptions"])
            + "</ul></details>"
        )
    return section(
        "training",
        "Training extrapolations",
        "".join(parts),
        esc("Estimates built on measured training steps: labelled as estimates, never as measurements."),
    )
