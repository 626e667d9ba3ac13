//! What the runs become: rows (the runs of one configuration, median and
//! min-max), the table with each row's ratio to its raw transport, the
//! relays' counts, the CSV (`--csv`, read back by `--chart-from`) and the
//! SVG chart.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use crate::relay::RelayStats;
use crate::{common, Mode, Run, Suite};

pub(crate) struct Row {
    suite: Suite,
    pub(crate) mode: Mode,
    size: usize,
    sessions: usize,
    /// Loss rate of the fault relay (0: no relay).
    loss: f64,
    runs: Vec<Run>,
    /// The relay's counters of each run (empty at loss 0).
    relay: Vec<RelayStats>,
    placement: String,
}

/// Adds `run` to the row of its configuration (`key`'s), or `key` as a new row.
pub(crate) fn add_run(rows: &mut Vec<Row>, key: Row, run: Run, relay: Vec<RelayStats>) {
    let row = match rows.iter().position(|r| {
        r.suite == key.suite
            && r.mode == key.mode
            && r.size == key.size
            && r.sessions == key.sessions
            && r.loss.to_bits() == key.loss.to_bits()
    }) {
        Some(i) => &mut rows[i],
        None => {
            rows.push(key);
            rows.last_mut().expect("just pushed")
        }
    };
    row.runs.push(run);
    row.relay.extend(relay);
}

impl Row {
    /// A configuration without runs yet.
    pub(crate) fn new(
        suite: Suite,
        mode: Mode,
        size: usize,
        sessions: usize,
        loss: f64,
        placement: String,
    ) -> Row {
        Row {
            suite,
            mode,
            size,
            sessions,
            loss,
            runs: Vec::new(),
            relay: Vec::new(),
            placement,
        }
    }

    fn median(&self) -> f64 {
        let mut r: Vec<f64> = self.runs.iter().map(Run::rate).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        r[r.len() / 2]
    }
    fn min_max(&self) -> (f64, f64) {
        let r = self.runs.iter().map(Run::rate);
        let min = r.clone().fold(f64::INFINITY, f64::min);
        let max = r.fold(0.0, f64::max);
        (min, max)
    }
}

/// Rows (runs grouped by configuration) from a CSV written by `--csv`.
pub(crate) fn rows_from_csv(path: &PathBuf) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 10 {
            return Err(format!("{}: short line {line:?}", path.display()).into());
        }
        let suite = Suite::from_str(f[0], true)?;
        let mode = Mode::from_str(f[1], true)?;
        let size: usize = f[2].parse()?;
        let sessions: usize = f[3].parse()?;
        let run = Run {
            sent: f[5].parse()?,
            received: f[6].parse()?,
            elapsed: f[7].parse()?,
        };
        let loss: f64 = f[9].trim_end_matches('%').parse()?;
        let key = Row::new(suite, mode, size, sessions, loss, String::new());
        add_run(&mut rows, key, run, Vec::new());
    }
    Ok(rows)
}

pub(crate) fn chart(
    path: &PathBuf,
    rows: &[Row],
    modes: &[Mode],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420 * modes.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((modes.len(), 1));
    for (panel, mode) in panels.iter().zip(modes) {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.mode == *mode).collect();
        let labels: Vec<String> = sel
            .iter()
            .map(|r| {
                let label = if r.suite.is_reactor() {
                    format!("{} {}B x{}", r.suite.name(), r.size, r.sessions)
                } else {
                    format!("{} {}B", r.suite.name(), r.size)
                };
                if r.loss > 0.0 {
                    format!("{label} @{}", common::loss_label(r.loss))
                } else {
                    label
                }
            })
            .collect();
        // Log scale: batched one-way rates are tens of times the others.
        let max = sel.iter().map(|r| r.min_max().1).fold(1.0, f64::max) / 1000.0;
        let min = 1.0;
        let mut c = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{}: thousand records per second (median, min-max; log scale)",
                    mode.name()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..sel.len(), (min..max * 1.5).log_scale())?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(sel.len())
            .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
            .y_desc("k/s")
            .draw()?;
        c.draw_series(sel.iter().enumerate().map(|(i, r)| {
            let color = match r.suite {
                Suite::Udp => BLUE,
                Suite::UdpBatch => RGBColor(0, 120, 200),
                Suite::Dtls => RED,
                Suite::Tcp => GREEN,
                Suite::Tls => MAGENTA,
                Suite::ReactorUdp => CYAN,
                Suite::ReactorOsnet => RGBColor(200, 100, 0),
                Suite::ReactorRouter => RGBColor(120, 60, 160),
                Suite::ReactorSharedUdp => RGBColor(0, 160, 160),
                Suite::ReactorShared => RGBColor(160, 120, 0),
                Suite::TokioUdp => RGBColor(90, 90, 90),
                Suite::Tokio => RGBColor(0, 0, 0),
                Suite::WebrtcDtls => RGBColor(220, 120, 160),
            };
            Rectangle::new(
                [(i, min), (i + 1, (r.median() / 1000.0).max(min))],
                color.mix(0.6).filled(),
            )
        }))?;
        c.draw_series(sel.iter().enumerate().map(|(i, r)| {
            let (lo, hi) = r.min_max();
            PathElement::new(
                vec![(i, (lo / 1000.0).max(min)), (i, (hi / 1000.0).max(min))],
                BLACK.stroke_width(3),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// Prints the table of `rows`, then what the relays dropped.
pub(crate) fn print_table(rows: &[Row]) {
    println!(
        "\n| suite | mode | size | sessions | loss | median records/s | min-max | goodput MB/s | sent | received | lost | ratio to raw | placement |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (min, max) = r.min_max();
        let sent: u64 = r.runs.iter().map(|x| x.sent).sum();
        let received: u64 = r.runs.iter().map(|x| x.received).sum();
        let base = rows.iter().find(|b| {
            b.suite == r.suite.baseline()
                && b.mode == r.mode
                && b.size == r.size
                && b.sessions == r.sessions
                && b.loss.to_bits() == r.loss.to_bits()
        });
        let ratio = match base {
            Some(b) if b.suite != r.suite && r.loss > 0.0 => format!(
                "{:.2}x {} at {}",
                r.median() / b.median(),
                b.suite.name(),
                common::loss_label(r.loss)
            ),
            Some(b) if b.suite != r.suite => {
                format!("{:.2}x {}", r.median() / b.median(), b.suite.name())
            }
            _ => "-".into(),
        };
        // One-way reactor rows also against blocking UDP and batched UDP (one
        // session, same size and loss), the yardsticks for one-way.
        let mut ratio = ratio;
        if r.suite.is_reactor() && r.mode == Mode::Oneway {
            for other in [Suite::Udp, Suite::UdpBatch] {
                if let Some(b) = rows.iter().find(|b| {
                    b.suite == other
                        && b.mode == r.mode
                        && b.size == r.size
                        && b.loss.to_bits() == r.loss.to_bits()
                }) {
                    let x = format!("{:.2}x {}", r.median() / b.median(), other.name());
                    ratio = if ratio == "-" {
                        x
                    } else {
                        format!("{ratio}; {x}")
                    };
                }
            }
        }
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0}-{:.0} | {:.1} | {} | {} | {} | {} | {} |",
            r.suite.name(),
            r.mode.name(),
            r.size,
            r.sessions,
            common::loss_label(r.loss),
            r.median(),
            min,
            max,
            r.median() * r.size as f64 / 1e6,
            sent,
            received,
            sent.saturating_sub(received),
            ratio,
            r.placement
        );
    }
    // What the relays dropped on purpose; the rest of `lost` was lost in
    // socket buffers (or, in echo, is a resend after a timeout).
    for r in rows.iter().filter(|r| !r.relay.is_empty()) {
        let sum = |f: fn(&RelayStats) -> u64| r.relay.iter().map(f).sum::<u64>();
        let (up_in, up_drop) = (sum(|s| s.to_server.received), sum(|s| s.to_server.dropped));
        let (down_in, down_drop) = (sum(|s| s.to_client.received), sum(|s| s.to_client.dropped));
        let pct = |d: u64, n: u64| 100.0 * d as f64 / n.max(1) as f64;
        println!(
            "relay, {} {} {} B x{} at {}: to server {} in, {} dropped ({:.2}%); to client {} in, {} dropped ({:.2}%); send errors {}; refused {}",
            r.suite.name(),
            r.mode.name(),
            r.size,
            r.sessions,
            common::loss_label(r.loss),
            up_in,
            up_drop,
            pct(up_drop, up_in),
            down_in,
            down_drop,
            pct(down_drop, down_in),
            sum(|s| s.to_server.send_errors + s.to_client.send_errors),
            sum(|s| s.refused_clients),
        );
    }
    if rows.iter().any(|r| !r.relay.is_empty()) {
        println!(
            "note: at loss > 0, one-way rates are bounded by the relay thread (what it did not \
             read, `sent` minus its `in`, was lost in its socket buffer) and echo rates by the \
             resend timeout (50 ms or more per lost datagram); compare rows of the same loss only"
        );
    }
}

/// Writes every run of `rows` as CSV to `path`.
pub(crate) fn write_csv(path: &PathBuf, rows: &[Row]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    writeln!(
        f,
        "suite,mode,size,sessions,run,sent,received,seconds,records_per_s,loss,relay_dropped"
    )?;
    for r in rows {
        for (i, x) in r.runs.iter().enumerate() {
            let dropped = r
                .relay
                .get(i)
                .map_or(0, |s| s.to_server.dropped + s.to_client.dropped);
            writeln!(
                f,
                "{},{},{},{},{},{},{},{:.4},{:.1},{},{}",
                r.suite.name(),
                r.mode.name(),
                r.size,
                r.sessions,
                i + 1,
                x.sent,
                x.received,
                x.elapsed,
                x.rate(),
                r.loss,
                dropped
            )?;
        }
    }
    Ok(())
}
