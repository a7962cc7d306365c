//! Output: tables and colour for people, one JSON document for machines, and the
//! one-line error on stderr.
//!
//! Contract: colour only when the stream is a terminal (or `--color always`), and
//! never when `NO_COLOR` is set. Text that comes from the filesystem or the user
//! (paths, link text, messages) reaches a terminal only through [`shown`]: a name
//! cannot move the cursor, retitle the window or clear the screen (S10); JSON keeps
//! every string exactly. `--quiet` suppresses everything on stdout on
//! success. Write errors on stdout (e.g. a closed pipe) are ignored: the exit code
//! still reports what the run did.

use crate::cli::ColorChoice;
use std::io::{IsTerminal, Write};
use switchyard::Error;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    color_out: bool,
    color_err: bool,
}

/// A colour (ANSI SGR code).
#[derive(Debug, Clone, Copy)]
pub enum Paint {
    Red,
    Green,
    Yellow,
    Bold,
    Dim,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Red => "1;31",
            Paint::Green => "32",
            Paint::Yellow => "33",
            Paint::Bold => "1",
            Paint::Dim => "2",
        }
    }
}

impl Out {
    /// Decides colour from the choice, `NO_COLOR` and whether stdout/stderr are terminals.
    pub fn new(json: bool, quiet: bool, choice: ColorChoice) -> Out {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let decide = |tty: bool| {
            !no_color
                && match choice {
                    ColorChoice::Always => true,
                    ColorChoice::Never => false,
                    ColorChoice::Auto => tty,
                }
        };
        Out {
            json,
            quiet,
            color_out: decide(std::io::stdout().is_terminal()),
            color_err: decide(std::io::stderr().is_terminal()),
        }
    }

    /// Whether human output goes to stdout.
    pub fn human(&self) -> bool {
        !self.json && !self.quiet
    }

    /// `s` painted for stdout.
    pub fn paint(&self, p: Paint, s: &str) -> String {
        paint(self.color_out, p, s)
    }

    /// Prints `s` on stdout (human output only).
    pub fn say(&self, s: &str) {
        if self.human() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }

    /// Prints the JSON document (in `--json` mode only).
    pub fn json(&self, v: &impl serde::Serialize) {
        if self.json {
            let mut o = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut o, v);
            let _ = o.write_all(b"\n");
            let _ = o.flush();
        }
    }

    /// Prints each warning as one line on stderr, whatever the output mode (O9: the
    /// command succeeded, and `--json` also lists them under `warnings`).
    pub fn warnings(&self, warnings: &[String]) {
        let mut err = std::io::stderr().lock();
        for w in warnings {
            let _ = writeln!(
                err,
                "{}: {}: {}",
                paint(self.color_err, Paint::Bold, "switchyard"),
                paint(self.color_err, Paint::Yellow, "warning"),
                one_line(w)
            );
        }
    }

    /// Prints `e` as one line on stderr (plus, for failed rollbacks and recoveries,
    /// one line per target state, R5).
    pub fn error(&self, e: &Error) {
        let mut line = format!(
            "{}: {}: {}",
            paint(self.color_err, Paint::Bold, "switchyard"),
            paint(self.color_err, Paint::Red, &format!("error[{}]", e.id())),
            one_line(e.message())
        );
        if let Some(r) = e.remediation() {
            line.push_str(&format!(" (hint: {})", one_line(r)));
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
        for t in e.targets() {
            let _ = writeln!(
                err,
                "  {}: {} — {}",
                shown(&t.path),
                t.state,
                one_line(&t.remediation)
            );
        }
    }
}

/// Collapses a message to one line (stderr gets one line per error), escaped for a
/// terminal.
fn one_line(s: &str) -> String {
    shown(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `s` safe to print to a terminal (S10): control characters (C0, DEL, C1) and the
/// bidirectional-text overrides are written as `\u{..}` escapes, as Rust's debug
/// format writes them; everything else is kept.
pub fn shown(s: &str) -> String {
    let spoofs = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(spoofs) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if spoofs(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn paint(on: bool, p: Paint, s: &str) -> String {
    if on {
        format!("\x1b[{}m{s}\x1b[0m", p.code())
    } else {
        s.to_owned()
    }
}

/// A table cell: its text and an optional colour (applied after padding, so
/// alignment ignores escape codes).
pub struct Cell {
    text: String,
    paint: Option<Paint>,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell {
            text: shown(s),
            paint: None,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::from(text.as_str())
    }
}

/// A cell with a colour.
pub fn painted(s: impl Into<String>, p: Paint) -> Cell {
    Cell {
        text: shown(&s.into()),
        paint: Some(p),
    }
}

/// A compact left-aligned table: two spaces between columns, no trailing spaces.
pub fn table(out: &Out, headers: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.text.chars().count());
            }
        }
    }
    let mut s = String::new();
    let header: Vec<Cell> = headers.iter().map(|h| painted(*h, Paint::Bold)).collect();
    for r in std::iter::once(header).chain(rows) {
        let n = r.len();
        let mut line = String::new();
        for (i, c) in r.into_iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.text.chars().count());
            let text = match c.paint {
                Some(p) => out.paint(p, &c.text),
                None => c.text,
            };
            line.push_str(&text);
            if i + 1 < n {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `-` for a missing value in a table.
pub fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

impl Out {
    /// The same settings, with `--json` off (for the narrated demo).
    pub fn without_json(&self) -> Out {
        Out {
            json: false,
            ..*self
        }
    }
}

/// A progress bar on stderr for long runs (TTY only, human output only).
pub struct ProgressBar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

/// Runs shorter than this show no bar.
const BAR_MIN_ACTIONS: usize = 200;

impl ProgressBar {
    /// A bar if stderr is a terminal and output is for a person.
    pub fn for_stderr(out: &Out) -> Option<ProgressBar> {
        (out.human() && std::io::stderr().is_terminal()).then(|| ProgressBar {
            bar: std::sync::Mutex::new(None),
        })
    }

    /// Records that `done` of `total` actions of `op` are finished.
    pub fn step(&self, op: &str, done: usize, total: usize) {
        if total < BAR_MIN_ACTIONS {
            return;
        }
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        let bar = slot.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {elapsed}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(op.to_owned());
            b
        });
        bar.set_position(done as u64);
        if done >= total {
            bar.finish_and_clear();
            *slot = None;
        }
    }
}
