//! The plot: four panels against the number of assignments (log scale): check latency,
//! compile time, memory per assignment and compile cost per assignment. Text goes through
//! plotters' pure-Rust `ab_glyph` backend with a font committed next to this crate
//! (`fonts/`), so drawing needs no system font library.

use std::error::Error;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::report::{Report, SizeResult};

/// DejaVu Sans, cut down to the characters the plot uses (see `fonts/README.md`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// One line of a panel.
struct Series<'a> {
    name: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    /// Print the value next to each point.
    annotate: bool,
}

/// A horizontal target line.
struct Target<'a> {
    name: &'a str,
    value: f64,
}

struct Panel<'a> {
    title: &'a str,
    legend: SeriesLabelPosition,
    y_desc: &'a str,
    log_y: bool,
    series: Vec<Series<'a>>,
    target: Option<Target<'a>>,
}

pub fn draw(path: &Path, report: &Report) -> Result<(), Box<dyn Error>> {
    let rows = &report.results;
    if rows.is_empty() {
        return Err("no results to plot".into());
    }
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font does not parse")?;

    let xs = |f: &dyn Fn(&SizeResult) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.assignments as f64, f(r))).collect()
    };
    let panels = [
        Panel {
            title: "Check latency (one check, timer overhead subtracted)",
            legend: SeriesLabelPosition::UpperLeft,
            y_desc: "ns per check",
            log_y: false,
            series: vec![
                Series {
                    name: "median",
                    color: BLUE,
                    points: xs(&|r| r.check_median_ns),
                    annotate: true,
                },
                Series {
                    name: "p99",
                    color: RED,
                    points: xs(&|r| r.check_p99_ns),
                    annotate: true,
                },
                Series {
                    name: "mean, batched loop",
                    color: GREEN,
                    points: xs(&|r| r.check_mean_batched_ns),
                    annotate: false,
                },
            ],
            target: Some(Target {
                name: "target: median ≤ 1 µs",
                value: 1_000.0,
            }),
        },
        Panel {
            title: "Compile time (compile_documents)",
            legend: SeriesLabelPosition::UpperLeft,
            y_desc: "seconds",
            log_y: true,
            series: vec![
                Series {
                    name: "first compile",
                    color: ORANGE,
                    points: xs(&|r| r.compile_first_s),
                    annotate: false,
                },
                Series {
                    name: "median of repeats",
                    color: BLUE,
                    points: xs(&|r| r.compile_median_s),
                    annotate: true,
                },
            ],
            target: Some(Target {
                name: "target: ≤ 3 s at 1M",
                value: 3.0,
            }),
        },
        Panel {
            title: "Memory per assignment",
            legend: SeriesLabelPosition::UpperRight,
            y_desc: "bytes per assignment",
            log_y: true,
            series: vec![
                Series {
                    name: "snapshot heap (exact)",
                    color: BLUE,
                    points: xs(&|r| r.per_assignment(r.snapshot_heap_bytes)),
                    annotate: true,
                },
                Series {
                    name: "heap peak during compile",
                    color: ORANGE,
                    points: xs(&|r| r.per_assignment(r.compile_peak_heap_bytes)),
                    annotate: true,
                },
                Series {
                    name: "resident-set growth across compile",
                    color: GREEN,
                    points: rows
                        .iter()
                        .filter_map(|r| {
                            r.rss_growth_bytes
                                .map(|b| (r.assignments as f64, r.per_assignment(b).max(1.0)))
                        })
                        .collect(),
                    annotate: false,
                },
            ],
            target: Some(Target {
                name: "target: ≤ 300 B",
                value: 300.0,
            }),
        },
        Panel {
            title: "Compile cost per assignment",
            legend: SeriesLabelPosition::UpperRight,
            y_desc: "µs per assignment",
            log_y: false,
            series: vec![
                Series {
                    name: "first compile",
                    color: ORANGE,
                    points: xs(&|r| r.compile_first_s * 1e6 / r.assignments.max(1) as f64),
                    annotate: false,
                },
                Series {
                    name: "median of repeats",
                    color: BLUE,
                    points: xs(&|r| r.compile_median_s * 1e6 / r.assignments.max(1) as f64),
                    annotate: true,
                },
            ],
            target: Some(Target {
                name: "3 s / 1M = 3 µs",
                value: 3.0,
            }),
        },
    ];

    let root = BitMapBackend::new(path, (1600, 1120)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(90);
    header.draw(&Text::new(
        "iot-authz at scale: 100k principals, 10k scopes, 200 roles; assignments grow",
        (24, 14),
        (FAMILY, 30).into_font().color(&BLACK),
    ))?;
    header.draw(&Text::new(
        format!(
            "{} · nproc {} · {} · {}",
            report.started, report.machine.nproc, report.machine.cpu, report.machine.rustc
        ),
        (24, 54),
        (FAMILY, 18).into_font().color(&GREY),
    ))?;

    // Ticks at the measured sizes (and the decades between them), not at every 2..9 × 10^k.
    let mut ticks: Vec<f64> = rows.iter().map(|r| r.assignments as f64).collect();
    let lo = ticks.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ticks.iter().copied().fold(0.0, f64::max);
    let mut decade = 10f64.powf(lo.log10().ceil());
    while decade <= hi {
        ticks.push(decade);
        decade *= 10.0;
    }
    ticks.sort_by(f64::total_cmp);
    ticks.dedup_by(|a, b| (*a / *b - 1.0).abs() < 1e-9);
    let x_range = (lo / 2.0)..(hi * 2.0);
    for (area, panel) in body.split_evenly((2, 2)).iter().zip(panels.iter()) {
        draw_panel(area, panel, x_range.clone(), &ticks)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    x_range: Range<f64>,
    ticks: &[f64],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let values = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(panel.target.as_ref().map(|t| t.value));
    let (mut y_lo, mut y_hi) = (f64::INFINITY, 0f64);
    for v in values {
        y_lo = y_lo.min(v);
        y_hi = y_hi.max(v);
    }
    if !y_lo.is_finite() {
        y_lo = 1.0;
        y_hi = 10.0;
    }
    let x = x_range.log_scale().with_key_points(ticks.to_vec());
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(panel.title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(78);
    if panel.log_y {
        let y_range = (y_lo.max(1e-9) / 1.6)..(y_hi * 1.6);
        let mut chart = builder.build_cartesian_2d(x, y_range.log_scale())?;
        mesh(&mut chart, panel)?;
        lines(&mut chart, panel)?;
    } else {
        let y_range = 0.0..(y_hi * 1.18);
        let mut chart = builder.build_cartesian_2d(x, y_range)?;
        mesh(&mut chart, panel)?;
        lines(&mut chart, panel)?;
    }
    Ok(())
}

type Chart<'a, DB, X, Y> = ChartContext<'a, DB, Cartesian2d<X, Y>>;

fn mesh<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut Chart<'a, DB, X, Y>,
    panel: &Panel<'_>,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("assignments (log scale)")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|v| count_label(*v))
        .y_label_formatter(&|v| value_label(*v))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    Ok(())
}

fn lines<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut Chart<'a, DB, X, Y>,
    panel: &Panel<'_>,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x_lo, x_hi) = {
        let r = chart.x_range();
        (r.start, r.end)
    };
    if let Some(target) = &panel.target {
        let style = ShapeStyle::from(&BLACK.mix(0.55)).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(x_lo, target.value), (x_hi, target.value)],
                10,
                6,
                style,
            ))?
            .label(target.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], style));
    }
    for s in &panel.series {
        let color = s.color;
        chart
            .draw_series(
                LineSeries::new(s.points.iter().copied(), color.stroke_width(3)).point_size(5),
            )?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], color.stroke_width(3)));
        if !s.annotate {
            continue;
        }
        // The value next to each point, a few pixels up and right.
        chart.draw_series(s.points.iter().map(|&(x, y)| {
            EmptyElement::at((x, y))
                + Text::new(
                    value_label(y),
                    (8, -20),
                    (FAMILY, 14).into_font().color(&color),
                )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(panel.legend.clone())
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// `10k`, `100k`, `1M`, `2.5M` (axis ticks may fall between sizes).
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if v >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else {
        format!("{v:.0}")
    }
}

fn value_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        trim(format!("{v:.1}"))
    } else if v >= 0.01 {
        trim(format!("{v:.2}"))
    } else {
        format!("{v:.0e}")
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}
