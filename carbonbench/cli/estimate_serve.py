"""`carbonbench estimate --tpot-ms`: a whole service from a served-load result (carbonbench.serve_estimate)."""

from __future__ import annotations

from carbonbench.cli.output import echo_json
from carbonbench.cli.table import echo_safe


def service(opts: dict, df, select: dict, grid) -> None:
    from carbonbench.serve_estimate import estimate_service, render

    result = estimate_service(
        df,
        requests_per_day=opts["requests_per_day"],
        tpot_ms=opts.get("tpot_ms"),
        ttft_ms=opts.get("ttft_ms"),
        select=select,
        grid_g_per_kwh=grid.g_per_kwh if grid is not None else None,
        pue=opts.get("pue"),
        usd_per_kwh=opts.get("usd_per_kwh"),
        usd_per_device_hour=opts.get("usd_per_device_hour"),
    )
    if opts["fmt"] == "json":
        echo_json(result.to_dict())
    else:
        echo_safe(render(result))
