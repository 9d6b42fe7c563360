//! When things happened in a VM run, on the host's clock: every console line timed from QEMU's
//! start, cut into phases at marker lines, with the steps a guest's state file records nested
//! under their phase; written as a Markdown table and drawn as an SVG timeline (the
//! benchmarks' per-phase breakdowns).
//!
//! QEMU writes the serial console to `console.log` and stamps nothing. [`Recorder`] polls the
//! file's length every [`POLL`] and appends `MILLISECONDS BYTES` to `console.times` whenever it
//! grew, so a line's time is the first sample that includes all of it (to within one poll).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the console's length is sampled.
pub const POLL: Duration = Duration::from_millis(100);
/// The samples' file next to `console.log`.
pub const TIMES: &str = "console.times";

/// Samples `console.log` in a VM's directory while it runs; stops when dropped.
pub struct Recorder {
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Start sampling `dir/console.log`, timed from `started` (QEMU's start).
    pub fn start(dir: &Path, started: Instant) -> Result<Self> {
        let console = dir.join("console.log");
        let mut out = std::fs::File::create(dir.join(TIMES))?;
        let task = tokio::spawn(async move {
            let mut last = 0;
            loop {
                let len = std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0);
                if len != last {
                    last = len;
                    let ms = started.elapsed().as_millis();
                    if writeln!(out, "{ms} {len}").is_err() {
                        return;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(Self { task })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The console's lines (ANSI escapes removed), each with the second it was complete on the
/// console (see [`timed_lines`]).
pub fn console_lines(dir: &Path) -> Result<Vec<(f64, String)>> {
    let console = std::fs::read(dir.join("console.log"))
        .with_context(|| format!("reading {}", dir.join("console.log").display()))?;
    let times = std::fs::read_to_string(dir.join(TIMES))
        .with_context(|| format!("reading {}", dir.join(TIMES).display()))?;
    let samples = parse_samples(&times)?;
    Ok(timed_lines(&console, &samples))
}

/// `MILLISECONDS BYTES` lines.
fn parse_samples(text: &str) -> Result<Vec<(f64, u64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (ms, len) = l
                .split_once(' ')
                .with_context(|| format!("{TIMES}: {l:?} is not `MILLISECONDS BYTES`"))?;
            Ok((ms.parse::<f64>()? / 1000.0, len.trim().parse()?))
        })
        .collect()
}

/// Each line of `console` with the time of the first sample that holds all of it, its newline
/// included (a line written after the last sample gets the last sample's time). The end, not
/// the start: a line's first bytes may be escape sequences written long before its text (GRUB
/// clears the screen, then loads the kernel for seconds before the kernel's first line).
fn timed_lines(console: &[u8], samples: &[(f64, u64)]) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut s = 0;
    for raw in console.split(|b| *b == b'\n') {
        let newline = offset + raw.len() as u64;
        while s + 1 < samples.len() && samples[s].1 <= newline {
            s += 1;
        }
        let t = samples.get(s).map_or(0.0, |x| x.0);
        let text = strip_ansi(&String::from_utf8_lossy(raw));
        let text = text.trim_end_matches('\r').trim().to_string();
        if !text.is_empty() {
            out.push((t, text));
        }
        offset += raw.len() as u64 + 1;
    }
    out
}

/// `text` without ANSI escape sequences (systemd colours unit names on the console).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // parameters and intermediates, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One bar of a timeline: `depth` 0 is a phase, 1 a step within it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub name: String,
    pub start: f64,
    pub seconds: f64,
    pub depth: u8,
}

/// Phases (and their steps) from time 0 to `end`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub title: String,
    pub end: f64,
    pub spans: Vec<Span>,
}

/// A phase that starts at the first console line containing `marker` (searched from the start
/// of the phase before it); the first phase starts at 0 whatever its marker.
pub struct Marker<'a> {
    pub phase: &'a str,
    pub marker: &'a str,
    /// A phase that may not happen (its marker missing): then it is left out.
    pub optional: bool,
}

impl<'a> Marker<'a> {
    pub const fn new(phase: &'a str, marker: &'a str) -> Self {
        Self {
            phase,
            marker,
            optional: false,
        }
    }

    pub const fn optional(phase: &'a str, marker: &'a str) -> Self {
        Self {
            phase,
            marker,
            optional: true,
        }
    }
}

/// The phases of a boot from QEMU's start, as its console shows them: the firmware (or QEMU
/// loading a kernel given directly), GRUB where its terminal is the serial console, the
/// kernel and the initramfs, and the real root's userspace (systemd's welcome after the
/// switch; an initramfs of dracut says "Booting initrd" instead).
pub const BOOT_MARKERS: [Marker<'static>; 4] = [
    Marker::new("firmware", ""),
    Marker::optional("GRUB", "GNU GRUB"),
    Marker::new("kernel and initrd", "Linux version"),
    Marker::new("userspace", "Welcome to"),
];

impl Timeline {
    /// Cut `lines` into `markers`' phases; the last runs until `end`. A marker that never
    /// appears fails, naming it and the phase before it.
    pub fn from_console(
        title: &str,
        lines: &[(f64, String)],
        markers: &[Marker],
        end: f64,
    ) -> Result<Self> {
        // (phase, start) of each phase that happened
        let mut starts: Vec<(&str, f64)> = Vec::new();
        let mut from = 0;
        for (i, m) in markers.iter().enumerate() {
            if i == 0 {
                starts.push((m.phase, 0.0));
                continue;
            }
            match lines[from..].iter().position(|(_, l)| l.contains(m.marker)) {
                Some(at) => {
                    from += at;
                    starts.push((m.phase, lines[from].0));
                }
                None if m.optional => {}
                None => bail!(
                    "{title}: the console shows no {:?} (the start of phase {:?}) after phase {:?} began",
                    m.marker,
                    m.phase,
                    starts.last().map_or("", |s| s.0)
                ),
            }
        }
        let mut spans = Vec::new();
        for (i, (phase, start)) in starts.iter().enumerate() {
            let next = starts.get(i + 1).map_or(end, |s| s.1);
            spans.push(Span {
                name: phase.to_string(),
                start: *start,
                seconds: (next - start).max(0.0),
                depth: 0,
            });
        }
        Ok(Self {
            title: title.into(),
            end,
            spans,
        })
    }

    /// The index of the phase (depth 0) named `name`.
    fn phase(&self, name: &str) -> Result<usize> {
        self.spans
            .iter()
            .position(|s| s.name == name && s.depth == 0)
            .with_context(|| format!("{}: no phase {name:?}", self.title))
    }

    /// Put `steps` (name, seconds, in the order they ran) under `phase`, laid end to end from
    /// the phase's start, and what the steps do not account for as `(other)`.
    pub fn nest(&mut self, phase: &str, steps: &[(String, f64)]) -> Result<()> {
        let i = self.phase(phase)?;
        let parent = self.spans[i].clone();
        let mut at = parent.start;
        let mut children = Vec::new();
        for (name, secs) in steps {
            children.push(Span {
                name: name.clone(),
                start: at,
                seconds: *secs,
                depth: 1,
            });
            at += secs;
        }
        let rest = parent.start + parent.seconds - at;
        if rest > 0.05 {
            children.push(Span {
                name: "(other)".into(),
                start: at,
                seconds: rest,
                depth: 1,
            });
        }
        let at = i + 1;
        self.spans.splice(at..at, children);
        Ok(())
    }

    /// Put under `phase` its progress lines (`==> [  Ns] what`, as `imgmode` prints each step
    /// when its output is no terminal) found on the console during the phase: each runs until
    /// the next, the last until the phase ends. A phase with no such line is left as it is.
    pub fn nest_progress(&mut self, phase: &str, lines: &[(f64, String)]) -> Result<()> {
        let p = self.spans[self.phase(phase)?].clone();
        let end = p.start + p.seconds;
        let marks: Vec<(f64, String)> = lines
            .iter()
            .filter(|(t, _)| *t >= p.start && *t <= end)
            .filter_map(|(t, l)| {
                let rest = &l[l.find("==> [")? + 5..];
                let what = rest[rest.find(']')? + 1..].trim();
                Some((*t, short(what)))
            })
            .collect();
        let steps: Vec<(String, f64)> = marks
            .iter()
            .enumerate()
            .map(|(i, (t, what))| {
                let next = marks.get(i + 1).map_or(end, |m| m.0);
                (what.clone(), next - t)
            })
            .collect();
        if steps.is_empty() {
            return Ok(());
        }
        // what came before the first progress line
        let lead = marks[0].0 - p.start;
        let mut all = vec![];
        if lead > 0.05 {
            all.push(("(before the first step)".to_string(), lead));
        }
        all.extend(steps);
        self.nest(phase, &all)
    }

    /// A Markdown table: phase, step, start, seconds, share of the whole.
    pub fn table(&self) -> String {
        let mut s = format!(
            "### {}\n\n| phase | step | starts at s | seconds | share |\n|---|---|---|---|---|\n",
            self.title
        );
        for sp in &self.spans {
            let (p, st) = if sp.depth == 0 {
                (sp.name.as_str(), "")
            } else {
                ("", sp.name.as_str())
            };
            s.push_str(&format!(
                "| {p} | {st} | {:.1} | {:.1} | {:.0}% |\n",
                sp.start,
                sp.seconds,
                100.0 * sp.seconds / self.end.max(f64::EPSILON)
            ));
        }
        s.push_str(&format!("| **total** | | 0.0 | {:.1} | 100% |\n", self.end));
        s
    }

    /// The timeline drawn: one row of bars per depth, each labelled with its name and seconds
    /// (in a legend under the seconds axis when the bar is too narrow for it).
    pub fn svg(&self) -> String {
        use svg::node::element::{Rectangle, Text, Title};
        const W: f64 = 1200.0;
        const LEFT: f64 = 10.0;
        const ROW: f64 = 56.0;
        const TOP: f64 = 40.0;
        const PALETTE: [&str; 8] = [
            "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
        ];
        let scale = (W - 2.0 * LEFT) / self.end.max(1.0);
        let rows = self.spans.iter().map(|s| s.depth).max().unwrap_or(0) as f64 + 1.0;
        let label = |sp: &Span| format!("{} {:.1}s", sp.name, sp.seconds);
        // bars too narrow for their label are named in a legend under the axis
        let unlabelled: Vec<usize> = (0..self.spans.len())
            .filter(|i| {
                let sp = &self.spans[*i];
                (sp.seconds * scale).max(1.0) <= 6.0 * label(sp).len() as f64
            })
            .collect();
        const COLUMNS: usize = 3;
        const LINE: f64 = 16.0;
        let legend_top = TOP + rows * ROW + 30.0;
        let height = legend_top + (unlabelled.len().div_ceil(COLUMNS)) as f64 * LINE + 10.0;
        let mut doc = svg::Document::new()
            .set("xmlns", "http://www.w3.org/2000/svg")
            .set("width", W)
            .set("height", height)
            .set("viewBox", (0, 0, W, height))
            .set("font-family", "sans-serif")
            .set("font-size", 11)
            .add(
                Text::new(format!("{} ({:.1} s)", self.title, self.end))
                    .set("x", LEFT)
                    .set("y", 20)
                    .set("font-size", 14),
            );
        for (i, sp) in self.spans.iter().enumerate() {
            let x = LEFT + sp.start * scale;
            let w = (sp.seconds * scale).max(1.0);
            let y = TOP + sp.depth as f64 * ROW;
            let label = label(sp);
            doc = doc.add(
                Rectangle::new()
                    .set("x", x)
                    .set("y", y)
                    .set("width", w)
                    .set("height", ROW - 16.0)
                    .set("fill", PALETTE[i % PALETTE.len()])
                    .set("stroke", "white")
                    .add(Title::new(label.clone())),
            );
            // a label where it fits (about 6 px a character), else only the hover title
            if w > 6.0 * label.len() as f64 {
                doc = doc.add(
                    Text::new(label)
                        .set("x", x + 3.0)
                        .set("y", y + (ROW - 16.0) / 2.0 + 4.0)
                        .set("fill", "white"),
                );
            } else if w > 6.0 * (sp.seconds as u64).to_string().len() as f64 + 6.0 {
                doc = doc.add(
                    Text::new(format!("{:.0}", sp.seconds))
                        .set("x", x + 2.0)
                        .set("y", y + (ROW - 16.0) / 2.0 + 4.0)
                        .set("fill", "white"),
                );
            }
        }
        doc = seconds_axis(doc, self.end, LEFT, scale, TOP + rows * ROW);
        // in time order down each column
        let per_column = unlabelled.len().div_ceil(COLUMNS).max(1);
        for (k, i) in unlabelled.iter().enumerate() {
            let sp = &self.spans[*i];
            let x = LEFT + (k / per_column) as f64 * (W - 2.0 * LEFT) / COLUMNS as f64;
            let y = legend_top + (k % per_column) as f64 * LINE;
            let indent = if sp.depth > 0 { "  " } else { "" };
            doc = doc
                .add(
                    Rectangle::new()
                        .set("x", x)
                        .set("y", y - 9.0)
                        .set("width", 10)
                        .set("height", 10)
                        .set("fill", PALETTE[i % PALETTE.len()]),
                )
                .add(
                    Text::new(format!("{indent}{}", label(sp)))
                        .set("x", x + 14.0)
                        .set("y", y)
                        .set("xml:space", "preserve"),
                );
        }
        doc.to_string()
    }

    /// Write `stem.md` and `stem.svg`.
    pub fn write(&self, stem: &Path) -> Result<()> {
        if let Some(p) = stem.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(stem.with_extension("md"), self.table())?;
        std::fs::write(stem.with_extension("svg"), self.svg())?;
        Ok(())
    }
}

/// Ticks and their seconds along `y`, every 5, 10 or 60 s as the span `end` asks.
fn seconds_axis(mut doc: svg::Document, end: f64, left: f64, scale: f64, y: f64) -> svg::Document {
    use svg::node::element::{Line, Text};
    let tick = if end > 300.0 {
        60.0
    } else if end > 60.0 {
        10.0
    } else {
        5.0
    };
    let mut t = 0.0;
    while t <= end {
        let x = left + t * scale;
        doc = doc
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", y - 8.0)
                    .set("y2", y - 2.0)
                    .set("stroke", "black"),
            )
            .add(
                Text::new(format!("{t:.0}"))
                    .set("x", x)
                    .set("y", y + 10.0)
                    .set("text-anchor", "middle"),
            );
        t += tick;
    }
    doc
}

/// A progress message cut to its first words (a step's name in a table).
fn short(what: &str) -> String {
    let mut out = String::new();
    for w in what.split_whitespace() {
        if out.len() + w.len() > 40 {
            out.push('…');
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// A step log's (`steplog::StepState` JSON: `done`, `seconds`) steps in the order they ran.
pub fn steps_of(state: &serde_json::Value) -> Result<Vec<(String, f64)>> {
    let done = state["done"]
        .as_array()
        .context("the state file has no `done` list")?;
    done.iter()
        .map(|d| {
            let name = d.as_str().context("a `done` entry is not a string")?;
            let secs = state["seconds"][name]
                .as_f64()
                .with_context(|| format!("the state file records no seconds for {name:?}"))?;
            Ok((name.to_string(), secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_the_first_sample_that_holds_them() {
        let console = b"SeaBIOS\nLinux version 6\r\n\x1b[0;32mWelcome\x1b[0m to Debian\nlate";
        // "SeaBIOS\n" is 8 bytes, the kernel line 17, the welcome line 29; the kernel line's
        // first two bytes arrived at 1.0, the rest at 2.0
        let samples = [(0.5, 8), (1.0, 10), (2.0, 25), (3.0, 60)];
        let l = timed_lines(console, &samples);
        assert_eq!(
            l,
            vec![
                (0.5, "SeaBIOS".to_string()),
                (2.0, "Linux version 6".to_string()),
                (3.0, "Welcome to Debian".to_string()),
                (3.0, "late".to_string()),
            ]
        );
    }

    #[test]
    fn phases_are_cut_at_markers_and_steps_nest_under_theirs() {
        let lines: Vec<(f64, String)> = [
            (0.5, "SeaBIOS"),
            (2.0, "Linux version 6"),
            (3.0, "Welcome to Debian"),
            (9.0, "Linux version 6"),
        ]
        .into_iter()
        .map(|(t, l)| (t, l.to_string()))
        .collect();
        let markers = [
            Marker::new("firmware", ""),
            Marker::new("kernel", "Linux version"),
            Marker::new("userspace", "Welcome to"),
            Marker::new("second kernel", "Linux version"),
        ];
        let mut t = Timeline::from_console("boot", &lines, &markers, 12.0).unwrap();
        let starts: Vec<f64> = t.spans.iter().map(|s| s.start).collect();
        assert_eq!(starts, [0.0, 2.0, 3.0, 9.0]);
        assert_eq!(t.spans[3].seconds, 3.0);
        t.nest("userspace", &[("a".into(), 1.0), ("b".into(), 2.0)])
            .unwrap();
        let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "firmware",
                "kernel",
                "userspace",
                "a",
                "b",
                "(other)",
                "second kernel"
            ]
        );
        assert_eq!(t.spans[5].start, 6.0);
        assert_eq!(t.spans[5].seconds, 3.0);
        let table = t.table();
        assert!(
            table.contains("| userspace |  | 3.0 | 6.0 | 50% |"),
            "{table}"
        );
        assert!(table.contains("|  | b | 4.0 | 2.0 | 17% |"), "{table}");
        let svg = t.svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<title>userspace 6.0s</title>"), "{svg}");

        let mut t = Timeline::from_console("boot", &lines, &markers[..2], 12.0).unwrap();
        let progress: Vec<(f64, String)> = [
            (4.0, "[ 3.1] imgmode[480]: ==> [   0s] checking the installation disk and the tools"),
            (7.0, "==> [   3s] fetching the seed docker://registry.example/a-very-long-name@sha256:0123"),
            (20.0, "==> [  9s] after the end"),
        ]
        .into_iter()
        .map(|(t, l)| (t, l.to_string()))
        .collect();
        t.nest_progress("kernel", &progress).unwrap();
        let steps: Vec<(&str, f64, f64)> = t
            .spans
            .iter()
            .filter(|s| s.depth == 1)
            .map(|s| (s.name.as_str(), s.start, s.seconds))
            .collect();
        assert_eq!(
            steps,
            [
                ("(before the first step)", 2.0, 2.0),
                ("checking the installation disk and the…", 4.0, 3.0),
                ("fetching the seed…", 7.0, 5.0)
            ]
        );

        let missing = [
            Marker::new("firmware", ""),
            Marker::new("install", "imgmode ibi install"),
        ];
        let e = Timeline::from_console("ibi", &lines, &missing, 12.0).unwrap_err();
        assert!(e.to_string().contains("no \"imgmode ibi install\""), "{e}");
    }
}
