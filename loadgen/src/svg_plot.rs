//! A hand-written SVG of latency percentile curves: x = percentile on the usual 1/(1−p) log scale, y = latency on a log scale.

use std::fmt::Write as _;

use crate::report::PhaseReport;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// 99.99th percentile: four nines is as far as a 20 s window has samples for.
const MAX_NINES: f64 = 4.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

fn nines(percentile: f64) -> f64 {
    (-(1.0 - percentile / 100.0).max(1e-9).log10()).min(MAX_NINES)
}

pub fn percentile_plot(phases: &[PhaseReport]) -> String {
    let values = phases.iter().flat_map(|phase| phase.curve.iter().map(|(_, ms)| *ms)).filter(|ms| *ms > 0.0);
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(low, high), ms| (low.min(ms), high.max(ms)));
    let (low_decade, high_decade) = if low > high { (-1.0, 3.0) } else { (low.log10().floor(), high.log10().ceil().max(low.log10().floor() + 1.0)) };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |percentile: f64| LEFT + plot_width * nines(percentile) / MAX_NINES;
    let y = |ms: f64| TOP + plot_height * (1.0 - (ms.max(1e-3).log10() - low_decade) / (high_decade - low_decade));

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="18" font-size="14">End-to-end latency (due time → message frame), Natter solid, raw-NATS baseline dashed</text>"#);
    for decade in (low_decade as i32)..=(high_decade as i32) {
        let ms = 10f64.powi(decade);
        let line_y = y(ms);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" x2="{}" y1="{line_y:.1}" y2="{line_y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##, LEFT + plot_width, LEFT - 6.0, line_y + 4.0, format_ms(ms));
    }
    for (label, percentile) in [("0%", 0.0), ("90%", 90.0), ("99%", 99.0), ("99.9%", 99.9), ("99.99%", 99.99)] {
        let line_x = x(percentile);
        let _ = writeln!(svg, r##"<line x1="{line_x:.1}" x2="{line_x:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{line_x:.1}" y="{}" text-anchor="middle">{label}</text>"##, TOP + plot_height, TOP + plot_height + 18.0);
    }
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#, LEFT + plot_width / 2.0, HEIGHT - 10.0);
    let mut rates: Vec<f64> = phases.iter().map(|phase| phase.rate_per_second).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    for (legend_row, phase) in phases.iter().filter(|phase| !phase.curve.is_empty()).enumerate() {
        let colour = COLOURS[rates.iter().position(|rate| *rate == phase.rate_per_second).unwrap_or(0) % COLOURS.len()];
        let dash = if phase.system == "baseline" { r#" stroke-dasharray="6 4""# } else { "" };
        let points: Vec<String> = phase.curve.iter().map(|(percentile, ms)| format!("{:.1},{:.1}", x(*percentile), y(*ms))).collect();
        let _ = writeln!(svg, r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#, points.join(" "));
        let legend_y = TOP + 10.0 + 18.0 * legend_row as f64;
        let legend_x = LEFT + plot_width + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" x2="{}" y1="{legend_y}" y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{} {}/s</text>"#,
            legend_x + 24.0,
            legend_x + 30.0,
            legend_y + 4.0,
            phase.system,
            phase.rate_per_second
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms}") }
}

#[cfg(test)]
mod tests {
    use super::nines;

    #[test]
    fn percentiles_map_to_nines() {
        for (percentile, expected) in [(0.0, 0.0), (90.0, 1.0), (99.0, 2.0), (99.9, 3.0), (99.99, 4.0), (100.0, 4.0)] {
            assert!((nines(percentile) - expected).abs() < 1e-6, "{percentile} → {}", nines(percentile));
        }
    }
}
