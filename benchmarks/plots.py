"""The benchmark's PNG plots: throughput and p99 against concurrency, the jobs-contention timeline, and each
detector's recall against its cost."""

from __future__ import annotations

from pathlib import Path


def concurrency_plots(series: dict[str, list[dict]], out: Path) -> list[Path]:
    """throughput.png and p99.png: each sweep's (scenario and variant) points against concurrency, whole photos
    (left) apart from single head crops sent straight to Triton (right, `triton-heads`: ten times the rate, and
    another unit). Each scenario has a colour of its own and each of its variants or workloads a line style, so no
    two lines look alike however many ran (in a panel of one scenario, its variants before a '/' take the colours:
    each head, batching on and off); a variant measured at one concurrency is a lone marker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = (("throughput", "throughput (requests/s)", "throughput.png"),
               ("p99_ms", "p99 latency (ms)", "p99.png")) if series else ()  # none when no sweep ran
    panels = {"photos through the pipeline": sorted(n for n in series if not n.startswith("triton-heads")),
              "one head crop per request, straight to Triton": sorted(n for n in series if n.startswith("triton-heads"))}
    panels = {title: names for title, names in panels.items() if names}

    def family(name: str, names: list[str]) -> str:
        scenario = name.split(" ")[0]
        return scenario if any(not n.startswith(scenario + " ") and n != scenario for n in names) \
            else name.split("/")[0]
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
    markers = "osD^vP*X"
    written = []
    for key, label, file in figures:
        fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 6), squeeze=False)
        for ax, (title, names) in zip(axes[0], panels.items()):
            families = sorted({family(name, names) for name in names})
            cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
            colours = {f: cmap(i) for i, f in enumerate(families)}
            seen: dict[str, int] = {}
            for name in names:
                kin = family(name, names)
                nth = seen[kin] = seen.get(kin, -1) + 1
                points = sorted(series[name], key=lambda r: r["concurrency"])
                ax.plot([p["concurrency"] for p in points], [p[key] or 0 for p in points], label=name,
                        color=colours[kin], linestyle=styles[nth % len(styles)],
                        marker=markers[nth % len(markers)], markersize=7 if len(points) == 1 else 4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrency (closed-loop clients)")
            ax.set_ylabel(label)
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        fig.suptitle(f"{label} vs concurrency")
        fig.tight_layout()
        fig.savefig(out / file, dpi=110)
        plt.close(fig)
        written.append(out / file)
    return written


def job_timeline_plot(idle: dict | None, during: dict | None, out: Path) -> Path | None:
    """jobs-contention.png from its idle row and its during-the-job row: live latency over time with the job's
    progress on a second axis, and the two windows' latency distributions side by side."""
    if not (idle and during and during.get("timeline")):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline, job = during["timeline"], during["job"]
    fig, (ax, dist) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    t = [p[0] for p in timeline["latency"]]
    ax.scatter(t, [p[1] for p in timeline["latency"]], s=4, alpha=0.5, color="tab:blue", label="live /analyze")
    for i, span in enumerate(timeline["idle"]):
        ax.axvspan(*span, color="tab:green", alpha=0.10, label="idle windows" if i == 0 else None)
        ax.hlines([idle["p50_ms"], idle["p95_ms"]], *span, colors="tab:green", linestyles=["-", "--"])
    ax.axvspan(*timeline["job"], color="tab:orange", alpha=0.10, label="job window")
    ax.hlines([during["p50_ms"], during["p95_ms"]], *timeline["job"], colors="tab:orange", linestyles=["-", "--"])
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the live load began")
    ax.set_ylabel("live /analyze latency (ms; lines: p50, dashed p95)")
    done = ax.twinx()
    done.step([p[0] for p in timeline["progress"]], [p[1] for p in timeline["progress"]], where="post",
              color="tab:red", label="job images finished")
    done.set_ylabel("job images finished")
    done.set_ylim(0, job["images"] * 1.05)
    handles = ax.get_legend_handles_labels()[0] + done.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    ax.set_title(f"{during['concurrency']} live clients; {job['images']}-image job at {job['images_per_s']} images/s")
    ax.grid(True, which="both", alpha=0.3)

    windows = [[p[1] for p in timeline["latency"]
                if any(start <= p[0] and p[0] + p[1] / 1e3 <= end for start, end in spans)]
               for spans in (timeline["idle"], [timeline["job"]])]
    dist.boxplot(windows, whis=(5, 95), showfliers=False)
    dist.set_xticks([1, 2], ["idle (before and after)", "during the job"])
    dist.set_yscale("log")
    dist.set_ylabel("latency (ms; box: quartiles, whiskers: p5-p95)")
    dist.set_title(f"p50 x{during['ratios']['p50']}, p95 x{during['ratios']['p95']}")
    dist.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "jobs-contention.png", dpi=110)
    plt.close(fig)
    return out / "jobs-contention.png"


def detector_plot(rows: list[dict], out: Path) -> Path | None:
    """detectors.png: each detector's recall against its ms per photo on every labelled set pooled (left), and its
    recall on each set (right); hollow markers and dashed lines are the default's variants that are not served."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pooled, each) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1, 1.3]})
    sets = list(rows[0]["sets"])
    for i, r in enumerate(rows):
        colour = plt.cm.tab20(i % 20)
        face = colour if r["served"] else "none"
        whole = r["all_sets"]
        pooled.scatter(whole["ms_per_image"], whole["recall"], s=70, marker="o", facecolors=face, edgecolors=colour,
                       label=f"{r['variant']} ({whole['found']}/{whole['faces']}, {whole['stray']} stray)")
        each.plot(range(len(sets)), [r["sets"][name]["recall"] for name in sets], marker="o", color=colour,
                  markerfacecolor=face, linestyle="-" if r["served"] else "--", alpha=0.85, label=r["variant"])
    pooled.set_xscale("log")
    pooled.set_xlabel("ms per photo (detection, one photo at a time; least of the repeats)")
    pooled.set_ylabel("recall (IoU >= 0.4; `counted` photos by count)")
    pooled.set_title("recall vs cost, every labelled set pooled")
    pooled.grid(True, which="both", alpha=0.3)
    pooled.legend(fontsize=7, loc="lower right")
    each.set_xticks(range(len(sets)), sets, rotation=20, fontsize=8)
    each.set_ylabel("recall")
    each.set_title("recall on each labelled set")
    each.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "detectors.png", dpi=110)
    plt.close(fig)
    return out / "detectors.png"
