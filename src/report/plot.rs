//! Small server-side SVG line charts for the report pages.
//!
//! The pages must work from disk and without network access, so charts are drawn here as
//! inline SVG rather than by a JavaScript charting bundle: a few polylines, axis labels,
//! vertical markers (deploy, full rollout, decision) and an optional horizontal threshold.
//! Values may be drawn on a log scale (e-values span many orders of magnitude).

use super::words::{esc, number, time};
use std::fmt::Write;

/// One line on a chart.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// CSS colour.
    pub colour: &'static str,
    /// (unix seconds, value) points in time order; non-finite values are gaps.
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker at a moment.
#[derive(Clone, Debug)]
pub struct Marker {
    /// Unix seconds.
    pub at: f64,
    /// Short label drawn beside it.
    pub label: String,
}

/// A chart to draw.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Accessible title (also the SVG `<title>`).
    pub title: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
    /// A horizontal line (value, label), e.g. the evidence threshold.
    pub threshold: Option<(f64, String)>,
    /// Draw values on a log10 scale (non-positive values are dropped).
    pub log: bool,
}

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

impl Chart {
    /// The chart as an inline `<svg>` element; a short note instead when there is nothing to draw.
    pub fn svg(&self) -> String {
        let tf = |v: f64| {
            if self.log {
                (v > 0.0).then(|| v.log10())
            } else {
                v.is_finite().then_some(v)
            }
        };
        let mut xs: Vec<f64> = Vec::new();
        let mut ys: Vec<f64> = Vec::new();
        for l in &self.lines {
            for &(t, v) in &l.points {
                if let (true, Some(y)) = (t.is_finite(), tf(v)) {
                    xs.push(t);
                    ys.push(y);
                }
            }
        }
        if xs.is_empty() {
            return format!(
                "<p class=\"noplot\">No data to plot for {}.</p>",
                esc(&self.title)
            );
        }
        xs.extend(self.markers.iter().map(|m| m.at).filter(|t| t.is_finite()));
        if let Some(y) = self.threshold.as_ref().and_then(|(v, _)| tf(*v)) {
            ys.push(y);
        }
        let (x0, x1) = span(&xs);
        let (y0, y1) = span(&ys);
        let (y0, y1) = if self.log {
            (y0.floor(), y1.ceil().max(y0.floor() + 1.0))
        } else {
            let pad = (y1 - y0) * 0.08;
            (y0 - pad, y1 + pad)
        };
        let px = |t: f64| LEFT + (t - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
            esc(&self.title)
        );
        let _ = write!(
            s,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ddd\"/>",
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        // Y axis: three labels (bottom, middle, top).
        for k in 0..3 {
            let y = y0 + (y1 - y0) * k as f64 / 2.0;
            let label = if self.log {
                number(10f64.powf(y))
            } else {
                number(y)
            };
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">{}</text>",
                LEFT - 4.0,
                py(y) + 3.0,
                esc(&label)
            );
        }
        // X axis: start and end times.
        for (t, anchor) in [(x0, "start"), (x1, "end")] {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#555\">{}</text>",
                px(t),
                H - BOTTOM + 13.0,
                esc(&time(t))
            );
        }
        if let Some((v, label)) = &self.threshold
            && let Some(y) = tf(*v)
        {
            let _ = write!(
                s,
                "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#c0392b\">{}</text>",
                W - RIGHT,
                py(y),
                py(y),
                W - RIGHT - 2.0,
                py(y) - 3.0,
                esc(label)
            );
        }
        for m in &self.markers {
            if !m.at.is_finite() {
                continue;
            }
            let x = px(m.at);
            let _ = write!(
                s,
                "<line class=\"marker\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"2 2\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"#333\">{}</text>",
                H - BOTTOM,
                x + 2.0,
                H - 6.0,
                esc(&m.label)
            );
        }
        for l in &self.lines {
            // Runs of consecutive finite points become polylines; a gap ends a run.
            let mut run: Vec<(f64, f64)> = Vec::new();
            let flush = |run: &mut Vec<(f64, f64)>, s: &mut String| {
                match run.as_slice() {
                    [] => {}
                    [(x, y)] => {
                        let _ = write!(
                            s,
                            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"{}\"/>",
                            l.colour
                        );
                    }
                    pts => {
                        let joined: Vec<String> =
                            pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                        let _ = write!(
                            s,
                            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
                            l.colour,
                            joined.join(" ")
                        );
                    }
                }
                run.clear();
            };
            for &(t, v) in &l.points {
                match (t.is_finite(), tf(v)) {
                    (true, Some(y)) => run.push((px(t), py(y))),
                    _ => flush(&mut run, &mut s),
                }
            }
            flush(&mut run, &mut s);
        }
        // Legend.
        let mut x = LEFT;
        for l in &self.lines {
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"#333\">{}</text>",
                H - 10.0,
                l.colour,
                x + 13.0,
                H - 6.0,
                esc(&l.label)
            );
            x += 20.0 + 6.0 * l.label.chars().count() as f64;
        }
        s.push_str("</svg>");
        s
    }
}

fn span(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_lines_markers_and_threshold() {
        let c = Chart {
            title: "errors".into(),
            lines: vec![
                Line {
                    label: "canary".into(),
                    colour: "#c0392b",
                    points: vec![(100.0, 1.0), (110.0, 2.0), (120.0, f64::NAN), (130.0, 3.0)],
                },
                Line {
                    label: "control".into(),
                    colour: "#2471a3",
                    points: vec![(100.0, 1.0), (130.0, 1.0)],
                },
            ],
            markers: vec![Marker {
                at: 105.0,
                label: "deploy".into(),
            }],
            threshold: Some((2.5, "threshold".into())),
            log: false,
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "the point after the gap");
        assert!(svg.contains("class=\"threshold\""));
        assert!(svg.contains(">deploy</text>"));
    }

    #[test]
    fn nothing_to_draw_says_so() {
        let c = Chart {
            title: "t<x>".into(),
            log: true,
            lines: vec![Line {
                label: "e".into(),
                colour: "#000",
                points: vec![(1.0, 0.0), (2.0, -1.0)],
            }],
            ..Chart::default()
        };
        assert_eq!(
            c.svg(),
            "<p class=\"noplot\">No data to plot for t&lt;x&gt;.</p>"
        );
    }
}
