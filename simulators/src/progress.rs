//! Progress of long work (backfill, live traffic): bars on stderr when it is a terminal
//! (indicatif), plain lines on stdout otherwise, so logs and pipes stay readable.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How often a plain-line status ([`Task::status`]) is printed at most.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// A set of progress tasks shown together.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        Progress {
            multi: std::io::stderr().is_terminal().then(MultiProgress::new),
        }
    }

    /// Plain lines only.
    pub fn plain() -> Progress {
        Progress { multi: None }
    }

    /// Whether bars are drawn.
    pub fn is_bars(&self) -> bool {
        self.multi.is_some()
    }

    /// A task of `len` `unit`s (a bar), named `name`; `prefix` starts its plain lines.
    pub fn task(&self, prefix: &str, name: &str, len: u64, unit: &str) -> Task {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(len));
            let template = format!(
                "{{prefix:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed_precise}} {{msg}}"
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(format!("{prefix} {name}"));
            bar
        });
        Task {
            bar,
            prefix: prefix.to_owned(),
            name: name.to_owned(),
            len,
            unit: unit.to_owned(),
            done: AtomicU64::new(0),
            last_status: Mutex::new(None),
        }
    }

    /// A task without a known length (a spinner), for open-ended work such as live traffic.
    pub fn spinner(&self, prefix: &str, name: &str) -> Task {
        let task = self.task(prefix, name, 0, "");
        if let Some(bar) = &task.bar {
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        task
    }

    /// Prints a line above the bars, or plainly.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) if m.println(line).is_ok() => {}
            _ => println!("{line}"),
        }
    }
}

/// One task: a bar, or plain lines.
#[derive(Debug)]
pub struct Task {
    bar: Option<ProgressBar>,
    prefix: String,
    name: String,
    len: u64,
    unit: String,
    done: AtomicU64,
    last_status: Mutex<Option<Instant>>,
}

impl Task {
    /// `n` more units done; `note` says what (e.g. the day and its records).
    pub fn advance(&self, n: u64, note: &str) {
        let done = self.done.fetch_add(n, Ordering::SeqCst) + n;
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                bar.set_message(note.to_owned());
            }
            None => println!(
                "[{}] {} {note} [{done}/{} {}]",
                self.prefix, self.name, self.len, self.unit
            ),
        }
    }

    /// A status message: shown at once on a bar, printed at most every 10 s as a line.
    pub fn status(&self, note: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(note.to_owned()),
            None => {
                let Ok(mut last) = self.last_status.lock() else {
                    return;
                };
                if last.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                    *last = Some(Instant::now());
                    println!("[{}] {} {note}", self.prefix, self.name);
                }
            }
        }
    }

    /// Ends the task with a last note.
    pub fn finish(&self, note: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(note.to_owned()),
            None => println!("[{}] {} {note}", self.prefix, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tasks_count_and_never_draw() {
        let p = Progress::plain();
        assert!(!p.is_bars());
        let t = p.task("backfill", "s001", 3, "days");
        t.advance(1, "2026-03-02");
        t.advance(2, "2026-03-03..2026-03-04");
        assert_eq!(t.done.load(Ordering::SeqCst), 3);
        assert!(t.bar.is_none());
        t.status("first status is printed");
        let printed = *t.last_status.lock().expect("lock");
        t.status("a second within 10 s is not");
        assert_eq!(*t.last_status.lock().expect("lock"), printed);
    }
}
