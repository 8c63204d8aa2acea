"""One screen of a benchmark record: the ratios (and the times behind them), section by section. The full
record goes to the ``--out`` JSON file only.

    print("\\n".join(summary_lines(record)))
"""

from __future__ import annotations


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.3f}×"


def _time(section: dict, route: str) -> str:
    timing = section.get(route) or {}
    return f"{timing['median_s']:.3f} s" if "median_s" in timing else "—"


def summary_lines(record: dict) -> list[str]:
    options, machine = record["options"], record["machine"]
    lines = [f"ssvi bench: {options['arch']} width {options['width']:g}, batch {options['batch']}, "
             f"{options['image_size']}x{options['image_size']}, d = {options['density']:g} on "
             f"{machine.get('device_name', machine.get('device', options['device']))} ({machine.get('threads')} "
             f"threads); times are medians; ratios are production / reference, sparse / dense or variant / plain: "
             f"< 1 = faster"]
    for name in ("train_step", "eval"):
        section = record.get(name) or {}
        if section:
            paired = section.get("paired_ratio_median")
            lines.append(f"  {name:<10} reference {_time(section, 'reference')}, production "
                         f"{_time(section, 'production')}: {_ratio(section.get('production_vs_reference'))}"
                         + (f" (paired median {_ratio(paired)})" if paired is not None else ""))
    routes = (record.get("sparse_routes") or {}).get("summary") or {}
    for density, per_route in routes.items():
        for route, stats in per_route.items():
            lines.append(f"  layer {route} at d = {density}: sparse / dense median {_ratio(stats['median'])} "
                         f"(min {_ratio(stats['min'])}, max {_ratio(stats['max'])})")
    for density, row in ((record.get("kernel_steps") or {}).get("per_density") or {}).items():
        parts = [f"{route} {_ratio(row.get(f'{route}_vs_dense'))} (whole run {_ratio(row.get(f'{route}_whole_run_ratio'))})"
                 for route in ("all", "auto") if f"{route}_vs_dense" in row]
        lines.append(f"  kernel step at d = {density}: dense {_time(row, 'dense')}; " + ", ".join(parts))
    for name, row in ((record.get("speed_variants") or {}).get("variants") or {}).items():
        speedup = row.get("speedup_vs_plain")
        lines.append(f"  speed variant {name:<15} {row['median_s']:.3f} s/step, speedup vs plain "
                     f"{'—' if speedup is None else f'{speedup:.2f}×'}")
    for row in (record.get("concurrency") or {}).get("levels") or []:
        speedup = row.get("speedup_vs_one_process")
        lines.append(f"  {row['processes']} process(es): {row['aggregate_samples_per_s']:.1f} samples/s"
                     + (f" ({speedup:.2f}× one process)" if speedup else ""))
    lines.append(f"  wall time {record['wall_time_s']:.1f} s" + ("" if options.get("out") else
                                                                  "; the full record: add --out FILE.json"))
    return lines
