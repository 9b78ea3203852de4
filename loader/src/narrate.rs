//! `--explain`: say what is happening, as it happens.
//!
//! Off by default. When on, the loader announces each step and every
//! `bpf(2)` command the syscall layer reports (the fields it sends and what
//! the kernel answered) is printed, so a reader can follow the whole load on
//! a live system.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

pub fn enable() {
    ON.store(true, Ordering::Relaxed);
    crate::sys::watch(|command, fields, answer| {
        say(format_args!(
            "      bpf({command}, {{{fields}}}) = {answer}"
        ));
    });
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Prints one line to stdout (explain output is the command's output).
pub fn say(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
}

/// `n` and the noun in its number: "1 map", "7 maps".
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `narrate!("format", args)`: a line of `--explain` output, if enabled.
#[macro_export]
macro_rules! narrate {
    ($($arg:tt)*) => {
        if $crate::narrate::enabled() {
            $crate::narrate::say(format_args!($($arg)*));
        }
    };
}
