//! SVG plots of a simulation report (plotters' SVG backend, no fonts or bitmaps needed): held-out
//! loss and exact match against the round, and bytes sent per round by each node.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

/// Writes `quality.svg` and `bytes.svg` into `dir`; returns their paths.
pub fn write_all(report: &Report, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let quality = dir.join("quality.svg");
    let bytes = dir.join("bytes.svg");
    quality_plot(report, &quality)?;
    bytes_plot(report, &bytes)?;
    Ok(vec![quality, bytes])
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing plot: {e}")
}

/// Two panels: held-out loss (left) and exact match in % (right), round 0 = the base.
fn quality_plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut loss = vec![(0u64, report.base.heldout_loss)];
    let mut em = vec![(0u64, 100.0 * report.base.exact_match())];
    for r in &report.rounds {
        loss.push((r.round, r.quality.heldout_loss));
        em.push((r.round, 100.0 * r.quality.exact_match()));
    }
    let last = loss.last().map_or(1, |p| p.0).max(1);
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(480);
    let (lo, hi) = range(loss.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(&left)
        .caption("held-out loss", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0u64..last, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("loss")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(loss.iter().copied(), &BLUE))
        .map_err(err)?;
    chart
        .draw_series(loss.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(err)?;
    let top = em.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("exact match (%)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0u64..last, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("%")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(em.iter().copied(), &RED))
        .map_err(err)?;
    chart
        .draw_series(em.iter().map(|&p| Circle::new(p, 3, RED.filled())))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Bytes sent at the socket per round, one line per node (attackers dashed in grey).
fn bytes_plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<String> = report
        .rounds
        .first()
        .map(|r| r.nodes.iter().map(|n| n.node.clone()).collect())
        .unwrap_or_default();
    let first = report.rounds.first().map_or(1, |r| r.round);
    let last = report.rounds.last().map_or(1, |r| r.round).max(first + 1);
    let max = report
        .rounds
        .iter()
        .flat_map(|r| r.nodes.iter().map(|n| n.socket_up))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bytes sent per round by node (kB, at the socket)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(first..last, 0f64..max * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("kB")
        .draw()
        .map_err(err)?;
    for (i, name) in names.iter().enumerate() {
        let points: Vec<(u64, f64)> = report
            .rounds
            .iter()
            .filter_map(|r| {
                r.nodes
                    .iter()
                    .find(|n| &n.node == name)
                    .map(|n| (r.round, n.socket_up as f64 / 1e3))
            })
            .collect();
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    ((lo - pad).max(0.0), hi + pad)
}

#[cfg(test)]
mod tests {
    use super::super::report::{Latency, NodeRound, Quality, RoundRecord};
    use super::*;

    #[test]
    fn writes_svg_files_with_the_data() {
        let q = |l| Quality {
            heldout_loss: l,
            ppl_bound: 2.0,
            exact_match_correct: 1,
            exact_match_total: 2,
        };
        let rounds = (1..=3)
            .map(|r| RoundRecord {
                round: r,
                latency: Latency::default(),
                nodes: (0..2)
                    .map(|i| NodeRound {
                        node: format!("node-{i}"),
                        socket_up: 1000 * (i + 1),
                        socket_down: 10,
                        codec_up: 900,
                        codec_down: 9,
                        accepted: true,
                        reason: None,
                        rejections: vec![],
                        screening: vec![],
                        train_loss: Some(0.1),
                        attacker: false,
                    })
                    .collect(),
                accepted: 2,
                rejected: 0,
                rejected_by_reason: Default::default(),
                aggregation_notes: vec![],
                quality: q(1.0 / r as f64),
            })
            .collect();
        let report = Report {
            config: serde_json::json!({}),
            seed: 0,
            base: q(1.2),
            rounds,
            wall_s: 1.0,
            sockets: None,
            centralized: None,
            dp_epsilon: None,
            reproduce: String::new(),
            data: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(&report, dir.path()).unwrap();
        for f in files {
            let svg = std::fs::read_to_string(&f).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
            assert!(svg.contains("round"));
        }
        let bytes = std::fs::read_to_string(dir.path().join("bytes.svg")).unwrap();
        assert!(bytes.contains("node-1"));
    }
}
